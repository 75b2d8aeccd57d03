"""``fastmed distill train``: a small student from a frozen teacher checkpoint.

Each training image gives two views: a weak augmentation for the teacher and a
stronger one of the same kind for the student. The student's checkpoint is an
ordinary classifier checkpoint (``kind="classifier"``, registered ``arch``,
the teacher's class names, input size and normalization), so ``fastmed polyp
predict`` and the export helpers take it like any recognizer.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from fastmed.cfg.distill import DistillTrainConfig
from fastmed.data.folders import format_skipped
from fastmed.distill.data import DIGITS, LabelledImages, class_indices, cut_classes, hide_labels, load_labelled_images
from fastmed.distill.features import FeatureTap
from fastmed.distill.metrics import class_recalls, hungarian_matching
from fastmed.distill.objective import DistillObjective
from fastmed.distill.prior_target import target_distribution
from fastmed.distill.views import TwoViews, view_transform
from fastmed.engine import distributed
from fastmed.engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD, load_model, make_checkpoint
from fastmed.engine.device import autocast
from fastmed.engine.precise_bn import recompute_bn_stats
from fastmed.engine.training_run import RunSummary, start_run
from fastmed.errors import DataError, FastmedError
from fastmed.nets.classifiers import CLASSIFIERS
from fastmed.nets.registry import create_model



@dataclass
class Teacher:
    """A frozen teacher network and what its checkpoint says about its inputs."""

    model: torch.nn.Module
    path: str
    arch: str
    class_names: list[str]
    input_size: int
    normalization: dict[str, list[float]]


def load_teacher(path: str, device: torch.device) -> Teacher:
    """Load a fastmed classifier checkpoint as a frozen teacher (eval mode, ``requires_grad=False``)."""
    model, ckpt = load_model(path, map_location=device)
    if ckpt.get("kind") != "classifier":
        raise FastmedError(f"--teacher {path} is a {ckpt.get('kind')!r} checkpoint; a classifier checkpoint is needed")
    if not ckpt.get("class_names") or not ckpt.get("input_size"):
        raise FastmedError(f"--teacher {path} has no class_names/input_size; is it a fastmed classifier checkpoint?")
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(model.eval(), str(path), ckpt["arch"]["name"], list(ckpt["class_names"]),
                   int(ckpt["input_size"][0]), ckpt["normalization"])


class DistillTask:
    """The ``TrainTask`` of distillation (see ``fastmed.engine.fit``)."""

    def __init__(self, cfg: DistillTrainConfig, data: LabelledImages, teacher: Teacher | None, device: torch.device):
        if cfg.arch not in CLASSIFIERS:
            raise FastmedError(f"--arch {cfg.arch!r} is not a classifier; choose one of {', '.join(CLASSIFIERS)}")
        if teacher is not None and teacher.class_names != data.class_names:
            raise DataError(f"the teacher's classes {teacher.class_names} differ from the data's {data.class_names}")
        self.cfg, self.data, self.teacher, self.device = cfg, data, teacher, device
        self.num_classes = len(data.class_names)
        default_size = teacher.input_size if teacher else (32 if cfg.data == DIGITS else 64)
        self.image_size = cfg.image_size or default_size  # the student's; the teacher keeps its own
        teacher_size = teacher.input_size if teacher else self.image_size
        self.normalization = teacher.normalization if teacher else {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        flips = cfg.flips if cfg.flips is not None else cfg.data != DIGITS
        mean, std = self.normalization["mean"], self.normalization["std"]
        views = TwoViews(view_transform(teacher_size, cfg.teacher_aug, mean, std, flips),
                         view_transform(self.image_size, cfg.student_aug, mean, std, flips))
        self.weak = class_indices("weak-classes", cfg.weak_classes, data.class_names)
        if cfg.weak_train_fraction < 1.0:
            data = data.with_train_subset(cut_classes(data.labels("train"), self.weak, cfg.weak_train_fraction))
        if cfg.label_fraction < 1.0:
            data = data.with_train_labels(hide_labels(data.labels("train"), cfg.label_fraction, cfg.seed))
        # no labels and no KD: the student's outputs are clusters, scored after Hungarian matching to the classes
        self.label_free = cfg.kd_weight == 0 and (cfg.ce_weight == 0 or cfg.label_fraction == 0)
        self.class_of_output = torch.arange(self.num_classes)
        self.train_set = data.dataset("train", views)
        self.val_set = data.dataset("val", view_transform(self.image_size, 0.0, mean, std, flips))
        teacher_val_set = data.dataset("val", view_transform(teacher_size, 0.0, mean, std, flips))
        if len(self.train_set) < 2 or len(self.val_set) < 1:
            raise DataError(f"need >= 2 training and >= 1 validation images, got {len(self.train_set)} and {len(self.val_set)}")

        self.student = create_model(cfg.arch, num_classes=self.num_classes).to(device)
        self.taps = (FeatureTap(self.student), FeatureTap(teacher.model)) if cfg.feature_weight > 0 else None
        target = target_distribution(cfg.prior_target, self.num_classes, self.weak, cfg.weak_boost)
        self.objective = DistillObjective(
            self.num_classes, cfg.ce_weight, cfg.kd_weight, cfg.temperature, cfg.mi_weight, cfg.prior,
            cfg.prior_weight, cfg.prior_init_std, target, cfg.target_weight, cfg.feature_weight,
            (self.taps[0].dim, self.taps[1].dim) if self.taps else None).to(device)
        self.optimizer = torch.optim.AdamW([
            {"params": self.student.parameters(), "weight_decay": cfg.weight_decay},
            {"params": self.objective.parameters(), "weight_decay": 0.0},  # the prior's m, ρ; the projection
        ], lr=cfg.lr)
        distributed.sync_gradients(self.optimizer, self.student, self.objective)  # torchrun: averaged gradients
        self.generator = torch.Generator().manual_seed(cfg.seed)
        steps = cfg.epochs * max(1, len(self.train_set) // cfg.batch_size)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=steps)
        self.teacher_val_pred = self._predict(teacher.model, teacher_val_set) if teacher else None

    def _loader(self, dataset: torch.utils.data.Dataset, train: bool) -> torch.utils.data.DataLoader:
        return (distributed.train_loader if train else torch.utils.data.DataLoader)(
            dataset, batch_size=self.cfg.batch_size, shuffle=train, generator=self.generator if train else None,
            drop_last=train and len(dataset) > self.cfg.batch_size, num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda")

    @torch.no_grad()
    def _predict(self, model: torch.nn.Module, dataset: torch.utils.data.Dataset) -> torch.Tensor:
        preds = []
        for x, _ in self._loader(dataset, train=False):
            with autocast(self.device, self.cfg.amp):
                preds.append(model(x.to(self.device)).argmax(1).cpu())
        return torch.cat(preds)

    # --- TrainTask -------------------------------------------------------
    def train_batches(self, epoch: int):
        self.student.train()
        self.objective.train()
        return self._loader(self.train_set, train=True)

    def train_step(self, batch: Any) -> dict[str, float]:
        (teacher_view, student_view), labels = batch
        student_view, labels = student_view.to(self.device), labels.to(self.device)
        teacher_logits = None
        if self.teacher is not None:
            with torch.no_grad(), autocast(self.device, self.cfg.amp):
                teacher_logits = self.teacher.model(teacher_view.to(self.device)).float()
        with autocast(self.device, self.cfg.amp):
            student_logits = self.student(student_view)
        features = {}
        if self.taps:
            features = {"student_features": self.taps[0].features, "teacher_features": self.taps[1].features}
        out = self.objective(student_logits.float(), labels, teacher_logits, **features)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        self.scheduler.step()
        return {k: float(v.detach()) for k, v in out.items()}

    def evaluate(self) -> dict[str, float]:
        """Validation top-1, balanced accuracy, recall of the weak classes (and agreement with the teacher)
        after re-estimating BatchNorm statistics; label-free runs after Hungarian matching (``matched_acc``)."""
        student_views = ((sv,) for (_, sv), _ in self._loader(self.train_set, train=True))
        recompute_bn_stats(self.student, student_views, self.device)
        self.student.eval()
        pred = self._predict(self.student, self.val_set)
        labels = torch.as_tensor(self.data.labels("val"))
        if self.label_free:
            self.class_of_output = hungarian_matching(pred, labels, self.num_classes)
            pred = self.class_of_output[pred]
        recalls = class_recalls(pred, labels, self.num_classes)
        metrics = {"acc": float((pred == labels).float().mean()), "balanced_acc": float(recalls.nanmean())}
        if self.label_free:
            metrics["matched_acc"] = metrics["acc"]
        if self.weak:
            metrics["recall_weak"] = float(recalls[self.weak].nanmean())
        if self.teacher_val_pred is not None:
            metrics["teacher_agree"] = float((pred == self.teacher_val_pred).float().mean())
            metrics["teacher_acc"] = float((self.teacher_val_pred == labels).float().mean())
        return metrics

    def checkpoint(self) -> dict[str, Any]:
        cfg = self.cfg
        meta = {"teacher": self.teacher.path if self.teacher else None,
                "teacher_arch": self.teacher.arch if self.teacher else None,
                "data": cfg.data,
                "objective": {"ce_weight": cfg.ce_weight, "kd_weight": cfg.kd_weight, "temperature": cfg.temperature,
                              "mi_weight": cfg.mi_weight, "prior": cfg.prior, "prior_weight": cfg.prior_weight,
                              "prior_target": cfg.prior_target, "target_weight": cfg.target_weight,
                              "weak_boost": cfg.weak_boost, "feature_weight": cfg.feature_weight,
                              "label_fraction": cfg.label_fraction},
                "weak_classes": [self.data.class_names[i] for i in self.weak],
                "weak_train_fraction": cfg.weak_train_fraction,
                "hungarian_matched": self.label_free}
        return make_checkpoint(self._student_in_class_order(), task="distill", kind="classifier", arch=cfg.arch,
                               arch_kwargs={"num_classes": self.num_classes}, class_names=self.data.class_names,
                               input_size=[self.image_size, self.image_size], normalization=self.normalization, meta=meta)

    def _student_in_class_order(self) -> torch.nn.Module:
        """The student, or for a label-free run a copy whose output ``c`` is class ``c`` (head rows permuted)."""
        if not self.label_free:
            return self.student
        model = copy.deepcopy(self.student)
        _reorder_outputs(model, torch.argsort(self.class_of_output))
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "objective": self.objective.state_dict(), "class_of_output": self.class_of_output.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["model"])
        if self.label_free:  # the saved student is in class order: back to the order training left it in
            self.class_of_output = torch.as_tensor(state["class_of_output"])
            _reorder_outputs(self.student, self.class_of_output)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.objective.load_state_dict(state["objective"])


def _reorder_outputs(model: torch.nn.Module, rows: torch.Tensor) -> None:
    """In place: output ``k`` of ``model`` becomes its former output ``rows[k]`` (rows of the last Linear layer)."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    rows = rows.to(last.weight.device)
    with torch.no_grad():
        last.weight.copy_(last.weight[rows])
        last.bias.copy_(last.bias[rows])


def run_train(cfg: DistillTrainConfig) -> RunSummary:
    """Run a distillation (``fastmed distill train``); return the run's summary (best epoch by validation accuracy)."""
    session = start_run(cfg, "distill", "train")
    data = load_labelled_images(cfg.data, cfg.val_fraction)
    if data.skipped:
        print(format_skipped(data.skipped))
    teacher = load_teacher(cfg.teacher, session.device) if cfg.teacher else None
    task = DistillTask(cfg, data, teacher, session.device)
    title = f"{cfg.arch} from {teacher.arch if teacher else 'labels only'}"
    summary = session.fit(task, monitor="val/acc", mode="max", title=title, skipped=len(data.skipped))
    last = summary.history[-1]
    print(f"distill: {summary.epochs} epoch(s); last epoch " + ", ".join(f"{k}={v:.4f}" for k, v in last.items() if k.startswith("val/")))
    return summary
