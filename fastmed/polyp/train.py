"""``fastmed polyp train``: the polyp recognizer on class folders."""
from __future__ import annotations

from fastmed.cfg.polyp import PolypTrainConfig
from fastmed.data.folders import format_skipped, load_classification_splits, scan_class_folders
from fastmed.engine.classify import ClassifierTask
from fastmed.engine.init_weights import load_matching_weights, read_state_dict
from fastmed.engine.training_run import RunSummary, start_run
from fastmed.errors import FastmedError
from fastmed.nets.classifiers import head_prefixes
from fastmed.nets.registry import create_model


def _init_weights(model, cfg: PolypTrainConfig) -> dict[str, str]:
    """Apply --weights-init and --pretrained; return a note per source for the log."""
    notes = {}
    for option, path in (("weights_init", cfg.weights_init), ("pretrained", cfg.pretrained)):
        if not path:
            continue
        state, ckpt = read_state_dict(path)
        if option == "pretrained":
            if ckpt is None or ckpt.get("kind") != "pretrained-encoder":
                raise FastmedError(f"--pretrained {path} is not a checkpoint of `fastmed polyp pretrain`")
            if ckpt["arch"]["name"] != cfg.arch:
                raise FastmedError(f"--pretrained {path} was pre-trained for {ckpt['arch']['name']}, not --arch {cfg.arch}")
        if option == "pretrained":  # the encoder only: the pre-training head was never trained
            state = {k: v for k, v in state.items() if not k.startswith(head_prefixes(model))}
        loaded, skipped = load_matching_weights(model, state)
        notes[option] = f"{len(loaded)} tensors loaded from {path}, {len(skipped)} skipped (mismatched names or shapes)"
    return notes


def run_train(cfg: PolypTrainConfig) -> RunSummary:
    """Train; return the run's summary (best epoch by validation macro-F1)."""
    session = start_run(cfg, "polyp", "train")
    splits = load_classification_splits(cfg.data, cfg.val_fraction, cfg.seed)
    train = list(splits.train)
    skipped = list(splits.skipped)
    for extra in cfg.extra_data:
        scan = scan_class_folders(extra, splits.class_names)
        train += scan.samples
        skipped += scan.skipped
        print(f"extra data {extra}: {len(scan.samples)} images")
    if skipped:
        print(format_skipped(skipped))
    model = create_model(cfg.arch, num_classes=len(splits.class_names))
    notes = _init_weights(model, cfg) if not cfg.resume else {}
    for k, v in notes.items():
        print(f"{k}: {v}")
    task = ClassifierTask(
        model, arch=cfg.arch, arch_kwargs={"num_classes": len(splits.class_names)}, class_names=splits.class_names,
        train_samples=train, val_samples=splits.val, image_size=cfg.image_size, device=session.device, epochs=cfg.epochs,
        batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, workers=cfg.workers, augment=cfg.augment,
        amp=cfg.amp, seed=cfg.seed, task="polyp", meta={"init": notes, "train_images": len(train)},
    )
    print(f"training {cfg.arch} on {len(train)} images ({len(splits.val)} val), classes {splits.class_names}, "
          f"device {session.device}; run: {session.path}")
    summary = session.fit(task, monitor="val/macro_f1", mode="max", title=f"polyp {cfg.arch}", skipped=len(skipped))
    task.save_confusion(session.run.path / "confusion_matrix.png")
    if skipped:
        (session.run.path / "skipped.txt").write_text(format_skipped(skipped, limit=10**9) + "\n", encoding="utf-8")
    return summary
