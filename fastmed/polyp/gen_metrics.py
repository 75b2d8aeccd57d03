"""How new, diverse and class-faithful a generator's images are, judged independently.

The *judge* is a classifier trained on real images only (never on generated
ones, and not the discriminator, whose class head is a player of the game):
``train_judge`` fits a small ``judge_cnn`` on the training images, or the
user gives any fastmed classifier checkpoint (``--judge``). On sources
``x (N, 3, S, S)`` in [0, 1] with classes ``y (N,)`` and two generated draws
``y1 = G(x, c, z1)``, ``y2 = G(x, c, z2)``, ``generation_metrics`` reports

* ``pixel_change``: mean ``|y1 - x|`` (0 = a copy of the source);
* ``noise_diversity``: mean ``|y1 - y2|`` (0 = the noise is ignored);
* ``spread_generated`` / ``spread_real``: mean distance of L2-normalised judge
  features to their class mean, averaged over classes (generated < real =
  the generator collapses; maximising the first distribution distance also
  rewards shrinking W(Y, Y'), so this is the guard to watch);
* ``sinkhorn_to_real``: per-class debiased Sinkhorn divergence between real
  and generated judge features (blur 0.05), averaged over classes;
* ``judge_agreement``: share of generated images the judge assigns to their
  source class, beside ``judge_real_accuracy`` (its accuracy on held-out real
  images: DATA/test, else DATA/val, else the sources) and their ratio
  ``judge_agreement_ratio`` (1 = as recognisable as real images).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fastmed.engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD, load_model, make_checkpoint
from fastmed.errors import FastmedError
from fastmed.kernels import sinkhorn_divergence
from fastmed.nets.classifiers import feature_extractor
from fastmed.nets.registry import create_model
from fastmed.polyp.image_sets import ImageSet, imagenet_normalize, load_class_folders

JUDGE_BATCH = 64
CHUNK = 128  # images per forward pass when measuring


def train_judge(data: ImageSet, seed: int, steps: int, device: torch.device, base: int = 16) -> dict[str, Any]:
    """Fit a ``judge_cnn`` on the real images of ``data`` (random flips, Adam); return its classifier checkpoint."""
    K, size = len(data.class_names), int(data.images.shape[-1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("judge_cnn", num_classes=K, base=base).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(data.labels), (min(JUDGE_BATCH, len(data.labels)),), generator=rng)
        x = data.images[idx].to(device)
        flip = torch.rand(len(idx), 2, generator=rng).to(device) < 0.5
        x = torch.where(flip[:, 0, None, None, None], x.flip(3), x)
        x = torch.where(flip[:, 1, None, None, None], x.flip(2), x)
        loss = F.cross_entropy(model(imagenet_normalize(x)), data.labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return make_checkpoint(model.eval(), task="polyp", kind="classifier", arch="judge_cnn",
                           arch_kwargs={"num_classes": K, "base": base}, class_names=data.class_names, input_size=[size, size],
                           meta={"role": "independent judge of generated images", "real_images": len(data.labels), "steps": steps, "seed": seed})


class Judge:
    """A classifier checkpoint applied to ``(B, 3, H, W)`` images in [0, 1] (resized to its input size, normalised)."""

    def __init__(self, model: torch.nn.Module, ckpt: dict[str, Any], device: torch.device):
        self.model, self.device = model.to(device).eval(), device
        self.class_names = list(ckpt.get("class_names") or [])
        self.size = int((ckpt.get("input_size") or [0])[0])
        norm = ckpt.get("normalization") or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        self.mean = torch.tensor(norm["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(norm["std"], device=device).view(1, 3, 1, 1)
        self.body = feature_extractor(model)[0]

    @classmethod
    def from_checkpoint(cls, path_or_ckpt: str | os.PathLike | dict[str, Any], device: torch.device, what: str = "--judge") -> "Judge":
        """``what`` names the source in the error for a checkpoint that is not a classifier."""
        model, ckpt = load_model(path_or_ckpt, map_location=device)
        if ckpt.get("kind") != "classifier":
            raise FastmedError(f"{what} is a {ckpt.get('kind')!r} checkpoint; a classifier checkpoint is needed")
        return cls(model, ckpt, device)

    def _prep(self, x01: torch.Tensor) -> torch.Tensor:
        x = x01.to(self.device).float()
        if self.size and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def predict(self, x01: torch.Tensor) -> torch.Tensor:
        """Predicted classes ``(B,)``."""
        return torch.cat([self.model(self._prep(x01[i:i + CHUNK])).argmax(1).cpu() for i in range(0, len(x01), CHUNK)])

    @torch.no_grad()
    def features(self, x01: torch.Tensor) -> torch.Tensor:
        """L2-normalised pooled features ``(B, F)``."""
        return F.normalize(torch.cat([self.body(self._prep(x01[i:i + CHUNK])).float().cpu() for i in range(0, len(x01), CHUNK)]), dim=1)


def held_out_real(data: str | os.PathLike, class_names: list[str], size: int) -> tuple[ImageSet | None, str]:
    """The judge's real test images: ``DATA/test``, else ``DATA/val`` (``(None, "sources")`` when neither exists)."""
    for split in ("test", "val"):
        if (Path(data) / split).is_dir():
            return load_class_folders(Path(data) / split, size, class_names), split
    return None, "sources"


def _spread(f: torch.Tensor, labels: torch.Tensor, K: int) -> float:
    """Mean distance of features to their class mean, averaged over the classes present."""
    vals = [float((f[labels == k] - f[labels == k].mean(0)).norm(dim=1).mean()) for k in range(K) if (labels == k).sum() > 1]
    return sum(vals) / max(1, len(vals))


def generation_metrics(x01: torch.Tensor, y: torch.Tensor, fake1: torch.Tensor, fake2: torch.Tensor, judge: Judge | None,
                       real_test: ImageSet | None = None) -> dict[str, float]:
    """The measures of the module docstring for sources ``x01``/``y`` and two generated draws ``fake1``, ``fake2``."""
    out = {"pixel_change": float((fake1 - x01).abs().mean()), "noise_diversity": float((fake1 - fake2).abs().mean())}
    if judge is None:
        return out
    K = int(y.max()) + 1 if not judge.class_names else len(judge.class_names)
    fake, fake_y = torch.cat([fake1, fake2]), torch.cat([y, y])
    fr, ff = judge.features(x01), judge.features(fake)
    ot = [float(sinkhorn_divergence(fr[y == k][None], ff[fake_y == k][None], blur=0.05, diameter=2.0)[0])
          for k in range(K) if (y == k).any()]
    agreement = float((judge.predict(fake1) == y.cpu()).float().mean())
    xt, yt = (real_test.images, real_test.labels) if real_test is not None else (x01, y)
    real_acc = float((judge.predict(xt) == yt.cpu()).float().mean())
    return {**out, "spread_generated": _spread(ff, fake_y.cpu(), K), "spread_real": _spread(fr, y.cpu(), K),
            "sinkhorn_to_real": sum(ot) / len(ot), "judge_agreement": agreement, "judge_real_accuracy": real_acc,
            "judge_agreement_ratio": agreement / real_acc if real_acc > 0 else 0.0}
