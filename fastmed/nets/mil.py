"""Attention multiple-instance learning head for slide classification.

Ragged bags: the patches of ``B`` slides are stacked into ``x: (N, F)`` with
``offsets: (B+1,)`` (slide ``b`` is rows ``offsets[b]:offsets[b+1]``), so a
step can hold several slides of different sizes — no batch-size-1 assumption.
The forward pass returns logits only (losses live in ``fastmed.wsi.losses``)
and never leaves the input's device.

    h_i   = ReLU(W x̂_i),  x̂ = (x - mean) / std           patch embedding (N, H); mean/std from training features
    s_i   = w^T (tanh(V h_i) * sigmoid(U h_i))           gated attention score (N,)
    z_b   = sum_i a_i h_i,  a_i = sigmoid(s_i) / sum_j sigmoid(s_j)   (or softmax)
    bag logit   = c(z_b)        (B,)   the bag classifier
    patch logit = c(h_i)        (N,)   the same classifier on single patches
    instance logit = c'(h_i)    (N,)   a second (instance) classifier
"""
from __future__ import annotations

import torch
from torch import nn

from fastmed.kernels import mil_attention_pool
from fastmed.nets.registry import register


class GatedAttention(nn.Module):
    """Gated attention scores ``(N,)`` from embeddings ``(N, H)`` (Ilse et al., 2018)."""

    def __init__(self, dim: int, attn_dim: int):
        super().__init__()
        self.v = nn.Linear(dim, attn_dim)
        self.u = nn.Linear(dim, attn_dim)
        self.w = nn.Linear(attn_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h))).squeeze(-1)


class AttentionMIL(nn.Module):
    """Attention-MIL slide classifier (binary: abnormal vs normal) over ragged bags.

    Args:
        in_dim: patch feature size ``F``.
        hidden: embedding size ``H``.
        attn_dim: hidden size of the gated attention.
        dropout: dropout on embeddings (training only).
        normalize: ``"sigmoid"`` (sigmoid scores divided by their sum) or ``"softmax"``.
    """

    def __init__(self, in_dim: int, hidden: int = 128, attn_dim: int = 64, dropout: float = 0.1, normalize: str = "sigmoid"):
        super().__init__()
        if in_dim < 1 or hidden < 1 or attn_dim < 1:
            raise ValueError(f"in_dim, hidden, attn_dim must be >= 1, got {in_dim}, {hidden}, {attn_dim}")
        if normalize not in ("sigmoid", "softmax"):
            raise ValueError(f"normalize must be 'sigmoid' or 'softmax', got {normalize!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.normalize = normalize
        # per-feature standardization of the inputs (set from training features; saved with the weights)
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(hidden, attn_dim)
        self.classifier = nn.Linear(hidden, 1)
        self.instance_classifier = nn.Linear(hidden, 1)

    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardize inputs with the per-feature ``mean`` and ``std`` ``(F,)`` of the training patches."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-6))

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x: (N, F)``, ``offsets: (B+1,)`` int64 → dict of logits.

        Returns ``bag (B,)``, ``patch (N,)``, ``instance (N,)`` logits and raw
        attention scores ``attention (N,)``.
        """
        if x.dim() != 2:
            raise ValueError(f"x must be (N, F), got shape {tuple(x.shape)}")
        h = self.embed((x - self.feature_mean) / self.feature_std)
        scores = self.attention(h)
        z = mil_attention_pool(h, scores, offsets, normalize=self.normalize)
        return {
            "bag": self.classifier(z).squeeze(-1),
            "patch": self.classifier(h).squeeze(-1),
            "instance": self.instance_classifier(h).squeeze(-1),
            "attention": scores,
        }


@register("attention_mil")
def attention_mil(in_dim: int, hidden: int = 128, attn_dim: int = 64, dropout: float = 0.1, normalize: str = "sigmoid") -> AttentionMIL:
    """Registry builder of ``AttentionMIL`` (primitive kwargs only)."""
    return AttentionMIL(in_dim, hidden, attn_dim, dropout, normalize)
