"""A U-Net with GroupNorm (registered as ``"unet"``).

GroupNorm instead of BatchNorm keeps samples independent, which per-sample
gradient methods (``fastmed.kernels.per_sample_grad_dot``) need, and behaves
the same at batch size 1.

``UNet(in_channels=3, num_classes=1, base_width=16, depth=3)`` maps
``(B, in_channels, H, W)`` to mask logits ``(B, num_classes, H, W)``; H and W
must be divisible by ``2**depth``. With ``extra_heads={"corr": 1}`` the
forward returns a dict ``{"mask": (B, num_classes, H, W), "corr": (B, 1, H, W)}``
instead: each extra head is a 1x1 convolution on the last decoder features.
All constructor arguments are primitives, so checkpoints rebuild the network
from their ``arch`` record.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastmed.nets.registry import register


def group_count(channels: int, max_groups: int = 8) -> int:
    """The largest divisor of ``channels`` that is at most ``max_groups``."""
    return math.gcd(channels, max_groups)


class ConvBlock(nn.Sequential):
    """(3x3 conv -> GroupNorm -> ReLU) twice."""

    def __init__(self, c_in: int, c_out: int, max_groups: int = 8):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.GroupNorm(group_count(c_out, max_groups), c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.GroupNorm(group_count(c_out, max_groups), c_out),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Upsample x2 (bilinear + 1x1 conv, or a 2x2 transposed conv), concatenate the skip, ConvBlock."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, mode: str, max_groups: int):
        super().__init__()
        self.mode = mode
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2) if mode == "transpose" else nn.Conv2d(c_in, c_out, 1)
        self.block = ConvBlock(c_out + c_skip, c_out, max_groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose":
            x = self.up(x)
        else:
            x = self.up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.block(torch.cat([x, skip], 1))


class UNet(nn.Module):
    """U-Net: ``depth`` down/up levels, widths ``base_width * 2**level``.

    Args:
        in_channels: image channels (3 for RGB).
        num_classes: mask channels (1 = binary mask logits).
        base_width: channels of the first level.
        depth: number of 2x downsamplings (input sides must be divisible by ``2**depth``).
        up: ``"bilinear"`` (bilinear + 1x1 conv) or ``"transpose"`` (2x2 transposed conv).
        extra_heads: name -> channels of extra 1x1-conv outputs; when given, forward
            returns ``{"mask": logits, name: head output, ...}``.
        max_groups: GroupNorm groups (at most; a divisor of the channels).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_width: int = 16, depth: int = 3,
                 up: str = "bilinear", extra_heads: dict[str, int] | None = None, max_groups: int = 8):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if up not in ("bilinear", "transpose"):
            raise ValueError(f"up must be 'bilinear' or 'transpose', got {up!r}")
        extra_heads = dict(extra_heads or {})
        if "mask" in extra_heads:
            raise ValueError("extra_heads may not be called 'mask' (that is the main output)")
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stem = ConvBlock(in_channels, widths[0], max_groups)
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1], max_groups) for i in range(depth))
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], widths[i], up, max_groups) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.extra = nn.ModuleDict({name: nn.Conv2d(widths[0], int(c), 1) for name, c in extra_heads.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """``x (B, C, H, W)`` -> logits ``(B, num_classes, H, W)`` (or a dict with extra heads)."""
        k = 2**self.depth
        if x.shape[-1] % k or x.shape[-2] % k:
            raise ValueError(f"UNet input sides must be divisible by 2**depth = {k}, got {tuple(x.shape[-2:])}")
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up in self.up:
            h = up(h, skips.pop())
        logits = self.head(h)
        if not len(self.extra):
            return logits
        return {"mask": logits, **{name: head(h) for name, head in self.extra.items()}}


@register("unet")
def build_unet(**kwargs) -> UNet:
    """The GroupNorm U-Net (see ``UNet`` for the arguments)."""
    return UNet(**kwargs)


def mask_logits(output: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """The mask logits of a segmenter's output (a tensor, or the ``"mask"`` entry of a dict)."""
    return output["mask"] if isinstance(output, dict) else output
