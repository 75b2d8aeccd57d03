"""The four losses of the attention-MIL method (tensors in, scalar tensors out).

All logits are binary (abnormal vs normal). Patch labels are ``0``/``1``,
``-1`` where unknown; slide labels ``0``/``1``.

1. ``patch_loss``        BCE of the bag classifier applied to single patches, on labelled patches
                          drawn from several slides;
2. ``bag_loss``          BCE of the bag logits against the slide labels;
3. ``topk_instance_loss`` the K highest-attention patches of each bag take the slide label
                          (BCE of the instance classifier; K clamped to the bag size);
4. ``attention_patch_loss`` BCE of sigmoid(attention) x sigmoid(patch logit) against the patch label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastmed.kernels.mil_pool_reference import bag_index


def _labelled(labels: torch.Tensor) -> torch.Tensor:
    return labels >= 0


def bag_loss(bag_logits: torch.Tensor, slide_labels: torch.Tensor) -> torch.Tensor:
    """Loss 2: ``bag_logits (B,)``, ``slide_labels (B,)`` 0/1 → mean BCE."""
    return F.binary_cross_entropy_with_logits(bag_logits, slide_labels.to(bag_logits.dtype))


def patch_loss(patch_logits: torch.Tensor, patch_labels: torch.Tensor) -> torch.Tensor:
    """Loss 1: mean BCE over labelled patches; 0 (with a graph) when none is labelled."""
    keep = _labelled(patch_labels)
    if not bool(keep.any()):
        return patch_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(patch_logits[keep], patch_labels[keep].to(patch_logits.dtype))


def topk_rows(scores: torch.Tensor, offsets: torch.Tensor, k: int) -> torch.Tensor:
    """Row indices ``(sum_b min(k, n_b),)`` of the ``k`` highest scores of every bag (no Python loop).

    Rows are sorted by score (descending) and then stably by bag, which gives
    every row its rank inside its bag.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    bags = bag_index(offsets, len(scores))  # sorted: bag b fills positions offsets[b]:offsets[b+1]
    by_score = torch.argsort(scores.detach(), descending=True)
    order = by_score[torch.argsort(bags[by_score], stable=True)]  # grouped by bag, best first
    rank = torch.arange(len(scores), device=scores.device) - offsets[:-1][bags]  # rank of order[j] in its bag
    return order[rank < k]


def topk_instance_loss(instance_logits: torch.Tensor, scores: torch.Tensor, offsets: torch.Tensor, slide_labels: torch.Tensor, k: int) -> torch.Tensor:
    """Loss 3: the ``k`` highest-attention patches of bag ``b`` get label ``slide_labels[b]``; mean BCE."""
    rows = topk_rows(scores, offsets, k)
    bags = bag_index(offsets, len(scores))
    target = slide_labels.to(instance_logits.dtype)[bags[rows]]
    return F.binary_cross_entropy_with_logits(instance_logits[rows], target)


def attention_patch_loss(scores: torch.Tensor, patch_logits: torch.Tensor, patch_labels: torch.Tensor) -> torch.Tensor:
    """Loss 4: BCE of ``p = sigmoid(s) * sigmoid(patch logit)`` vs the patch label (labelled rows).

    Computed in log space: ``log p = logsigmoid(s) + logsigmoid(l)``,
    ``log(1 - p) = log1p(-p)``, clamped away from ``log 0``.
    """
    keep = _labelled(patch_labels)
    if not bool(keep.any()):
        return scores.sum() * 0.0
    log_p = F.logsigmoid(scores[keep].float()) + F.logsigmoid(patch_logits[keep].float())
    log_not_p = torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-6))
    y = patch_labels[keep].float()
    return -(y * log_p + (1 - y) * log_not_p).mean()
