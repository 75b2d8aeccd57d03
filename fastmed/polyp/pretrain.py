"""``fastmed polyp pretrain``: Models-Genesis self-supervised pre-training of the recognizer's encoder.

An encoder–decoder restores images corrupted by ``genesis_transforms.corrupt``
(Bézier intensity map, local pixel shuffling, optional in/out-painting); the
loss is the mean squared error to the original in [0, 1]. The encoder is the
convolutional trunk of the classifier ``--arch`` itself (ResNet: stem to
``layer4``; MobileNet/EfficientNet: ``features``), so the trained weights are
the classifier's own parameters. The decoder (upsampling convolutions, no
skip connections, so every detail has to pass through the encoder) is thrown
away afterwards. Labels are not used. ``--extra-data`` folders (e.g. the
images of ``fastmed polyp generate``) join the training images; the held-out
restoration images come from ``DATA`` only, so the validation MSE measures the
same thing with and without them.

Output (contract with ``fastmed polyp train --pretrained PATH``): the run
folder's ``weights/best.pt`` is a fastmed checkpoint with
``kind="pretrained-encoder"``, ``arch`` = the classifier architecture and its
kwargs, and ``model`` = the classifier's ``state_dict`` (encoder trained, head
as initialised); ``train`` loads every shape-matching tensor. The run folder
also holds ``restoration.png`` (corrupted / restored / original).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from fastmed.cfg.polyp import PolypPretrainConfig
from fastmed.data.folders import format_skipped
from fastmed.engine import distributed
from fastmed.engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD, make_checkpoint
from fastmed.data.images import list_images
from fastmed.engine.device import autocast
from fastmed.engine.plots import save_image_grid
from fastmed.engine.run_dir import RunDir
from fastmed.engine.training_run import RunSummary, start_run
from fastmed.errors import DataError, FastmedError
from fastmed.nets.registry import create_model
from fastmed.polyp.genesis_transforms import corrupt
from fastmed.polyp.image_sets import class_folder_root, imagenet_normalize, load_image_set


def spatial_encoder(model: nn.Module) -> nn.Module:
    """The convolutional trunk of a registered classifier: ``(B, 3, H, W)`` → ``(B, C, H/32, W/32)`` (shared parameters)."""
    if isinstance(model, tvm.ResNet):
        return nn.Sequential(*list(model.children())[:-2])
    if isinstance(model, (tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet)):
        return model.features
    raise FastmedError(f"no encoder rule for {type(model).__name__}; use a ResNet, MobileNet or EfficientNet --arch")


class RestorationNet(nn.Module):
    """Encoder (the classifier's trunk) + upsampling decoder: normalized image → restored image in [0, 1]."""

    def __init__(self, classifier: nn.Module, image_size: int):
        super().__init__()
        self.encoder = spatial_encoder(classifier)
        with torch.no_grad():
            was_training = self.encoder.training
            feat = self.encoder.eval()(torch.zeros(1, 3, image_size, image_size))
            self.encoder.train(was_training)
        c, h = feat.shape[1], feat.shape[2]
        n_up = max(0, round(math.log2(image_size / h)))
        layers: list[nn.Module] = []
        for _ in range(n_up):
            c_out = max(16, c // 2)
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c = c_out
        layers.append(nn.Conv2d(c, 3, 3, padding=1))
        self.decoder = nn.Sequential(*layers)
        self.image_size = image_size

    def forward(self, x_norm: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder(x_norm))
        if out.shape[-1] != self.image_size:
            out = F.interpolate(out, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


class CorruptedImages(torch.utils.data.Dataset):
    """``(corrupted, clean)`` pairs of ``(3, S, S)`` images in [0, 1] for a DataLoader.

    Item ``i`` of epoch ``epoch`` is flipped (half of the time) and corrupted with its own
    generator seeded by ``(seed, epoch, i)``, so the batches do not depend on ``--workers``.
    """

    def __init__(self, images: torch.Tensor, corrupt_fn: Callable[[torch.Tensor, np.random.Generator], torch.Tensor], seed: int):
        self.images, self.corrupt_fn, self.seed, self.epoch = images, corrupt_fn, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        clean = self.images[i].flip(2) if rng.random() < 0.5 else self.images[i]
        return self.corrupt_fn(clean, rng), clean


class PretrainTask:
    """The ``TrainTask`` of ``polyp pretrain``: restore corrupted images (MSE)."""

    def __init__(self, cfg: PolypPretrainConfig, train: torch.Tensor, val: torch.Tensor, device: torch.device, run: RunDir):
        self.cfg, self.device, self.run = cfg, device, run
        self.classifier = create_model(cfg.arch, num_classes=cfg.num_classes)
        self.net = RestorationNet(self.classifier, cfg.image_size).to(device)
        self.corrupt = partial(corrupt, bezier_prob=cfg.bezier_prob, shuffle_prob=cfg.shuffle_prob, shuffle_window=cfg.shuffle_window,
                               paint_prob=cfg.paint_prob, outpaint_share=cfg.outpaint_share)
        self.train_set = CorruptedImages(train, self.corrupt, cfg.seed)
        self.loader = distributed.train_loader(
            self.train_set, batch_size=min(cfg.batch_size, len(train)), shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(cfg.seed), num_workers=cfg.workers)
        val_rng = np.random.default_rng([cfg.seed, 1])
        self.val_clean = val
        self.val_corrupt = torch.stack([self.corrupt(img, val_rng) for img in val]) if len(val) else val
        self.optimizer = distributed.sync_gradients(torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay), self.net)

    def train_batches(self, epoch: int) -> Iterator[Any]:
        self.net.train()
        self.train_set.epoch = epoch  # read by the workers, which start when the loader is iterated
        distributed.set_epoch(self.loader, epoch)  # torchrun: this epoch's share of the shuffled order
        return iter(self.loader)

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        corrupted, clean = batch[0].to(self.device), batch[1].to(self.device)
        with autocast(self.device, self.cfg.amp):
            restored = self.net(imagenet_normalize(corrupted))
        loss = F.mse_loss(restored.float(), clean)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"mse": loss.item()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if len(self.val_clean) == 0:
            return {}
        self.net.eval()
        restored = torch.cat([self.net(imagenet_normalize(self.val_corrupt[i:i + 64].to(self.device))).float().cpu()
                              for i in range(0, len(self.val_clean), 64)])
        n = min(6, len(restored))
        rows = torch.stack([self.val_corrupt[:n], restored[:n], self.val_clean[:n]], 1).flatten(0, 1)
        save_image_grid(rows.permute(0, 2, 3, 1).numpy(), self.run.path / "restoration.png",
                        titles=["corrupted", "restored", "original"] * n, ncols=6)
        return {"mse": F.mse_loss(restored, self.val_clean).item(),
                "mse_identity": F.mse_loss(self.val_corrupt, self.val_clean).item()}

    def checkpoint(self) -> dict[str, Any]:
        s = self.cfg.image_size
        return make_checkpoint(
            self.classifier, task="polyp", kind="pretrained-encoder", arch=self.cfg.arch,
            arch_kwargs={"num_classes": self.cfg.num_classes}, input_size=[s, s],
            normalization={"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            meta={"method": "models-genesis", "corruptions": {k: getattr(self.cfg, k) for k in (
                "bezier_prob", "shuffle_prob", "shuffle_window", "paint_prob", "outpaint_share")}},
        )

    def state_dict(self) -> dict[str, Any]:
        return {"decoder": self.net.decoder.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classifier.load_state_dict(state["model"])
        if "decoder" in state:
            self.net.decoder.load_state_dict(state["decoder"])
            self.optimizer.load_state_dict(state["optimizer"])


def run_pretrain(cfg: PolypPretrainConfig) -> RunSummary:
    """Pre-train; return the run's summary (best epoch by held-out restoration MSE, when images are held out)."""
    session = start_run(cfg, "polyp", "pretrain")
    paths = list_images(class_folder_root(cfg.data))
    images = load_image_set([(p, 0) for p in paths], ["image"], cfg.image_size)
    if images.skipped:
        print(format_skipped(images.skipped))
    n = len(images.paths)
    if n < 2:
        raise DataError(f"{cfg.data}: pre-training needs at least 2 readable images, found {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = min(n - 1, max(1, round(n * cfg.val_fraction))) if cfg.val_fraction > 0 else 0
    train, skipped = [images.images[order[n_val:]]], list(images.skipped)
    for extra in cfg.extra_data:
        more = load_image_set([(p, 0) for p in list_images(class_folder_root(extra))], ["image"], cfg.image_size)
        train.append(more.images)
        skipped += more.skipped
        print(f"extra data {extra}: {len(more.paths)} images")
        if more.skipped:
            print(format_skipped(more.skipped))
    train_images = torch.cat(train)
    task = PretrainTask(cfg, train_images, images.images[order[:n_val]], session.device, session.run)
    print(f"pre-training the {cfg.arch} encoder on {len(train_images)} images ({n_val} held out), device {session.device}; "
          f"run: {session.path}")
    summary = session.fit(task, monitor="val/mse" if n_val else None, mode="min",
                          title=f"Models-Genesis pre-training ({cfg.arch})", skipped=len(skipped))
    if n_val:
        print(f"restoration MSE {summary.metrics['val/mse']:.4g} (corrupted input: {summary.metrics['val/mse_identity']:.4g})")
    return summary
