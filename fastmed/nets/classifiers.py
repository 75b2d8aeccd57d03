"""Image classifiers from torchvision, randomly initialised (nothing is downloaded).

Every builder takes ``num_classes`` and returns a module mapping
``(B, 3, H, W)`` float images (normalized) to ``(B, num_classes)`` logits.
Pretrained weights are loaded by the caller from a local path.
"""
from __future__ import annotations

import torch
import torchvision.models as tvm

from fastmed.nets.generators import JudgeCNN
from fastmed.nets.registry import register

CLASSIFIERS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
]


#: BatchNorm running-statistics momentum for every classifier. torchvision builds
#: MobileNetV3 and EfficientNet with 0.01, tuned for ImageNet-length schedules: after
#: the few hundred steps of a small medical dataset their running statistics are still
#: near the initial values and the model predicts one class in eval mode.
BN_MOMENTUM = 0.1


def _make_builder(name: str):
    def build(num_classes: int = 2, **kwargs) -> torch.nn.Module:
        model = getattr(tvm, name)(weights=None, num_classes=num_classes, **kwargs)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = BN_MOMENTUM
        return model

    build.__name__ = f"build_{name}"
    build.__doc__ = f"torchvision {name}, random init, ``num_classes`` outputs."
    return build


for _name in CLASSIFIERS:
    register(_name)(_make_builder(_name))


def feature_extractor(model: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """Split a registered classifier into (backbone → pooled features, feature dim).

    The returned module maps ``(B, 3, H, W)`` to ``(B, F)``.
    """
    if isinstance(model, tvm.ResNet):
        dim = model.fc.in_features
        body = torch.nn.Sequential(*list(model.children())[:-1], torch.nn.Flatten(1))
        return body, dim
    if isinstance(model, (tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet)):
        dim = _first_linear(model.classifier).in_features
        body = torch.nn.Sequential(model.features, model.avgpool, torch.nn.Flatten(1))
        return body, dim
    if isinstance(model, JudgeCNN):
        return model.body, model.fc.in_features
    raise TypeError(f"no feature extractor rule for {type(model).__name__}")


def head_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """``state_dict`` key prefixes of a registered classifier's head (``fc.`` or ``classifier.``)."""
    if isinstance(model, tvm.ResNet):
        return ("fc.",)
    if isinstance(model, (tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet)):
        return ("classifier.",)
    raise TypeError(f"no head rule for {type(model).__name__}")


def _first_linear(seq: torch.nn.Module) -> torch.nn.Linear:
    for m in seq.modules():
        if isinstance(m, torch.nn.Linear):
            return m
    raise TypeError("classifier head has no Linear layer")
