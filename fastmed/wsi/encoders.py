"""Frozen patch encoders: ``(B, 3, H, W)`` normalized RGB → ``(B, F)`` features.

* ``resnet50_l3`` (default): torchvision ResNet-50 truncated after ``layer3``,
  global average pooled (1024 features), the usual WSI-MIL choice;
* ``tiny``: three strided convolutions with fixed random weights, mean and
  standard deviation pooled (64 features) — fast on a CPU for demos and tests;
* any classifier registered in ``fastmed.nets`` (``resnet18``, ``mobilenet_v3_small`` ...).

Weights come only from ``weights`` (a torchvision state_dict or a fastmed
checkpoint); without it the encoder is randomly initialised (seeded). Nothing
is downloaded.

Provenance: every feature file records ``encoder`` (the name),
``encoder_sha256`` (``weights_sha256`` of the encoder as used, so it covers
the weights file and, for a random init, the seed), ``encoder_weights`` and
``encoder_seed``. Two feature files come from the same encoder when name and
hash agree (``encoder_identity``).
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from fastmed.errors import ConfigError


class MeanStdPool(nn.Module):
    """``(B, C, H, W)`` → ``(B, 2C)``: per-channel spatial mean and standard deviation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)


def _tiny() -> tuple[nn.Module, int]:
    layers, c = [], 3
    for width in (16, 32, 32):
        layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, MeanStdPool()), 2 * c


def _resnet50_l3() -> tuple[nn.Module, int]:
    import torchvision.models as tvm

    r = tvm.resnet50(weights=None)
    body = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    return body, 1024


def build_encoder(name: str, weights: str | None = None, seed: int = 0) -> tuple[nn.Module, int]:
    """``(encoder in eval mode, feature dim)`` for ``name``; weights from ``weights`` if given."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the random init is reproducible and independent of the caller's RNG
        if name == "tiny":
            model, dim = _tiny()
        elif name == "resnet50_l3":
            model, dim = _resnet50_l3()
        else:
            from fastmed.nets.classifiers import feature_extractor
            from fastmed.nets.registry import create_model

            model, dim = feature_extractor(create_model(name))
    if weights:
        _load_weights(model, weights)
    return model.eval().requires_grad_(False), dim


def _load_weights(model: nn.Module, path: str) -> None:
    """Load matching tensors of a state_dict / fastmed checkpoint (by name suffix and shape)."""
    from fastmed.engine.checkpoint import load_checkpoint

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
        raise ConfigError(f"cannot read encoder weights {path}: {exc}") from exc
    if isinstance(state, dict) and state.get("format") == "fastmed-checkpoint":
        state = load_checkpoint(path)["model"]
    own = model.state_dict()
    # truncated torchvision models renumber modules (conv1 -> 0, layer3 -> 6): match by order of shapes
    src = [(k, v) for k, v in state.items() if not k.startswith(("fc.", "classifier."))]
    mapped = {}
    if all(k in own for k, _ in src):
        mapped = {k: v for k, v in src if own[k].shape == v.shape}
    else:
        for (k_own, v_own), (_, v) in zip(own.items(), src):
            if v_own.shape != v.shape:
                break
            mapped[k_own] = v
    if not mapped:
        raise ConfigError(f"encoder weights {path} match no tensor of the encoder")
    model.load_state_dict(mapped, strict=False)


def weights_sha256(model: nn.Module) -> str:
    """Hex SHA-256 of ``model.state_dict()``: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def encoder_identity(attrs: dict[str, Any]) -> tuple[str, str]:
    """``(encoder name, weights sha256)`` recorded in a feature file's attributes (hash ``""`` when none was)."""
    return str(attrs.get("encoder", "")), str(attrs.get("encoder_sha256", ""))


def describe_encoder(attrs: dict[str, Any]) -> str:
    """``tiny (weights sha256 1a2b3c4d..., seed 0)`` for messages."""
    name, digest = encoder_identity(attrs)
    hashed = f"weights sha256 {digest[:12]}..." if digest else "no weights hash recorded"
    return f"{name or '?'} ({hashed}, seed {attrs.get('encoder_seed', '?')})"
