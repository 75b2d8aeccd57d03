"""Class-conditioned image generator and discriminator of the polyp generation model.

* ``"cond_generator"`` – ``ConditionalGenerator(num_classes, base=32, n_res=3, noise_channels=1, identity_start=False)``
  maps an image ``(B, 3, H, W)`` in [-1, 1], class indices ``(B,)`` and optional
  noise ``(B, noise_channels, H, W)`` to an image ``(B, 3, H, W)`` in [-1, 1].
  The class enters as one-hot planes concatenated to the input; encoder
  (two stride-2 convolutions), residual blocks, decoder (two upsamplings), and
  a last convolution (seeing the decoder features and the input) that adds a
  change in logit space: ``out = tanh(atanh(x) + delta)``; ``delta``'s
  convolution has the default random init scaled by ``START_SCALE`` (0.1), so a
  new generator already changes its sources a little. Noise enters twice: as input planes and, average-pooled to the
  bottleneck, added to every residual block's input through a learned 1x1
  convolution per block, so the noise reaches the deep layers instead of being
  washed out by the encoder's normalisation. ``identity_start=True`` is the
  baseline design: ``delta``'s convolution starts at zero (a new generator is
  the identity map, and a small budget leaves it there) and the noise is an
  input plane only. Used both for G (image -> new image) and F (new image ->
  restored image, no noise). H and W must be divisible by 4.
* ``"judge_cnn"`` – ``JudgeCNN(num_classes, base=16)``: a small classifier
  ``(B, 3, H, W)`` ImageNet-normalised → logits ``(B, num_classes)``; ``features(x)``
  gives the pooled ``(B, 4*base)`` features. ``polyp augment`` trains one on the
  real images only, as the independent judge of the generated images' class.
* ``"cond_discriminator"`` – ``ConditionalDiscriminator(num_classes, base=32)``
  maps ``(B, 3, H, W)`` to ``(adversarial logits (B,), class logits (B, num_classes))``:
  a shared convolutional trunk, a PatchGAN-style real/fake map averaged to
  one logit, and a class head on globally pooled features.

Instance normalisation keeps samples independent (the batches mix classes and
real/generated images). Constructor arguments are primitives, so checkpoints
rebuild the nets from their ``arch`` record.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastmed.nets.registry import register

START_SCALE = 0.1  # the default-init output (and deep-noise) convolutions are scaled by this: a small random start


def _conv(c_in: int, c_out: int, stride: int = 1, norm: bool = True, act: str = "relu") -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4 if stride == 2 else 3, stride, 1, bias=not norm)]
    if norm:
        layers.append(nn.InstanceNorm2d(c_out, affine=True))
    layers.append(nn.ReLU(inplace=True) if act == "relu" else nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.InstanceNorm2d(c, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConditionalGenerator(nn.Module):
    """Image-to-image generator conditioned on a class (see module docstring)."""

    def __init__(self, num_classes: int, base: int = 32, n_res: int = 3, noise_channels: int = 1, identity_start: bool = False):
        super().__init__()
        if num_classes < 1 or base < 1 or n_res < 0 or noise_channels < 0:
            raise ValueError(f"bad generator arguments: num_classes={num_classes}, base={base}, n_res={n_res}, noise_channels={noise_channels}")
        self.num_classes, self.noise_channels = num_classes, noise_channels
        c_in = 3 + num_classes + noise_channels
        self.encode = nn.Sequential(_conv(c_in, base), _conv(base, 2 * base, 2), _conv(2 * base, 4 * base, 2))
        self.res = nn.ModuleList([_Residual(4 * base) for _ in range(n_res)])
        # deep noise injection (not in the identity-start baseline): per block, noise planes -> channels, learned scale
        self.noise_in = nn.ModuleList(
            [nn.Conv2d(noise_channels, 4 * base, 1) for _ in range(n_res)] if noise_channels and not identity_start else [])
        self.decode = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(4 * base, 2 * base),
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(2 * base, base),
        )
        self.out = nn.Conv2d(base + 3, 3, 3, 1, 1)
        with torch.no_grad():  # a small random start (scale START_SCALE of the default init), or exactly zero
            for conv in [self.out, *self.noise_in]:
                conv.weight.mul_(0.0 if identity_start else START_SCALE)
                conv.bias.mul_(0.0 if identity_start else START_SCALE)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        B, _, H, W = x.shape
        if H % 4 or W % 4:
            raise ValueError(f"image sides must be divisible by 4, got {(H, W)}")
        planes = F.one_hot(labels.long(), self.num_classes).to(x.dtype)[:, :, None, None].expand(B, self.num_classes, H, W)
        parts = [x, planes]
        if self.noise_channels:
            parts.append(noise if noise is not None else torch.zeros(B, self.noise_channels, H, W, device=x.device, dtype=x.dtype))
        h = self.encode(torch.cat(parts, 1))
        deep_noise = F.avg_pool2d(parts[-1], 4) * 4 if self.noise_in else None  # (B, nc, H/4, W/4), unit variance again
        for i, block in enumerate(self.res):
            h = block(h + self.noise_in[i](deep_noise) if self.noise_in else h)
        h = self.decode(h)
        return torch.tanh(torch.atanh(x.clamp(-0.999, 0.999)) + self.out(torch.cat([h, x], 1)))


class JudgeCNN(nn.Module):
    """Small classifier: three stride-2 convolution blocks, global pooling, a linear head."""

    def __init__(self, num_classes: int, base: int = 16):
        super().__init__()
        if num_classes < 1 or base < 1:
            raise ValueError(f"bad judge arguments: num_classes={num_classes}, base={base}")
        layers: list[nn.Module] = []
        c = 3
        for c_out in (base, 2 * base, 4 * base):
            layers += [nn.Conv2d(c, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(c, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class ConditionalDiscriminator(nn.Module):
    """Real/fake PatchGAN head plus a class head on a shared trunk."""

    def __init__(self, num_classes: int, base: int = 32):
        super().__init__()
        if num_classes < 1 or base < 1:
            raise ValueError(f"bad discriminator arguments: num_classes={num_classes}, base={base}")
        self.trunk = nn.Sequential(
            _conv(3, base, 2, norm=False, act="leaky"), _conv(base, 2 * base, 2, act="leaky"),
            _conv(2 * base, 4 * base, 2, act="leaky"),
        )
        self.adv = nn.Conv2d(4 * base, 1, 3, 1, 1)
        self.cls = nn.Linear(4 * base, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.adv(h).mean(dim=(1, 2, 3)), self.cls(h.mean(dim=(2, 3)))


@register("cond_generator")
def build_cond_generator(num_classes: int = 3, base: int = 32, n_res: int = 3, noise_channels: int = 1,
                         identity_start: bool = False) -> ConditionalGenerator:
    """Class-conditioned image generator (G or the restorer F)."""
    return ConditionalGenerator(num_classes, base, n_res, noise_channels, identity_start)


@register("cond_discriminator")
def build_cond_discriminator(num_classes: int = 3, base: int = 32) -> ConditionalDiscriminator:
    """Discriminator with an adversarial and a class head."""
    return ConditionalDiscriminator(num_classes, base)


@register("judge_cnn")
def build_judge_cnn(num_classes: int = 3, base: int = 16) -> JudgeCNN:
    """Small independent classifier (the judge of generated images' class)."""
    return JudgeCNN(num_classes, base)
