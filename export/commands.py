"""CLI runners of ``fastmed export``, ``fastmed predict`` and ``fastmed bench``."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from fastmed.engine.atomic import atomic_write_json, atomic_write_text


def run_export(cfg) -> int:
    from fastmed.export.exporter import export

    result = export(
        cfg.weights, cfg.format, cfg.out, calib=cfg.calib, data=cfg.data, opset=cfg.opset,
        fixed_batch=cfg.batch or None, max_batch=cfg.max_batch, uint8_input=cfg.uint8_input, exporter=cfg.exporter,
        parity_tol=cfg.parity_tol, per_channel=cfg.per_channel, max_drop=cfg.max_drop,
        min_agreement=cfg.min_agreement, calib_images=cfg.calib_images,
        precision=cfg.precision, workspace_gb=cfg.workspace_gb, timing_cache=cfg.timing_cache, device=cfg.device,
        seed=cfg.seed,
    )
    if result.int8 is not None:
        r = result.int8
        acc = f"; accuracy fp32 {r.fp32_accuracy:.4f} → int8 {r.chosen.accuracy:.4f}" if r.chosen.accuracy is not None else ""
        print(f"[export] int8 plan '{r.chosen.plan}' passes the gate: drop {r.chosen.drop_points:+.2f} points vs fp32, "
              f"top-1 agreement {r.chosen.agreement:.3f} >= {r.min_agreement:g} ({r.measure}){acc}")
    for f in result.files[1:]:
        print(f"[export] also wrote {f}")
    return 0


def run_predict(cfg) -> int:
    from fastmed.engine.run_dir import new_run_dir
    from fastmed.export.predictor import Predictor
    from fastmed.export.video import is_video

    predictor = Predictor(cfg.weights, device=cfg.device, threads=cfg.threads)
    run = new_run_dir("predict", "run", cfg.out)
    source = Path(cfg.source)
    if is_video(source) or (cfg.stream and source.is_dir()):
        from fastmed.errors import ConfigError
        from fastmed.export.stream import stream_predict

        if predictor.meta.kind != "classifier":
            raise ConfigError(f"{cfg.weights} is a {predictor.meta.kind}: streaming (videos, --stream) handles "
                              "classifiers; give an image or a folder of images")

        report = stream_predict(predictor, source, queue_size=cfg.queue_size, max_frames=cfg.max_frames,
                                annotate_to=cfg.save_video)
        print(report.summary())
        _write_rows(run / "predictions.csv", [dict(r) for r in report.predictions], ["frame", "class", "prob"])
        atomic_write_json(run / "stream.json", {k: v for k, v in dataclasses.asdict(report).items() if k != "predictions"})
        print(f"[predict] {report.frames} frames → {run / 'predictions.csv'}, timings → {run / 'stream.json'}"
              + (f", video → {report.annotated}" if report.annotated else ""))
        return 0
    return _predict_images(predictor, source, cfg.batch_size, run)


def _predict_images(predictor, source: Path, batch_size: int, run: Path) -> int:
    from fastmed.data.images import list_images

    files = list_images(source)  # raises DataError when there is none
    if predictor.meta.kind == "segmenter":
        return _predict_masks(predictor, files, batch_size, run)
    done, probs, skipped = predictor.predict_files(files, batch_size=batch_size)
    from fastmed.export.predictions import write_predictions

    names = predictor.class_names
    out = write_predictions(run / "predictions.csv", done, probs, names)  # path,class,prob_<name>...
    for path, reason in skipped:
        print(f"[predict] skipped {path}: {reason}")
    print(f"[predict] {len(done)} images ({len(skipped)} skipped) with {predictor.runtime} → {out}")
    for path, p in list(zip(done, probs))[:10]:
        print(f"  {path}: {names[int(p.argmax())]} {p.max():.3f}")
    return 0 if done else 1


def _predict_masks(predictor, files: list[Path], batch_size: int, run: Path) -> int:
    """Segmenter artifact: ``masks/``, ``overlays/`` and ``predictions.csv`` (path, foreground_fraction) under ``run``."""
    from fastmed.export.segmenter import write_mask_predictions

    rows, skipped = write_mask_predictions(predictor, files, run, batch_size)
    out = _write_rows(run / "predictions.csv", rows, ["path", "foreground_fraction"])
    for path, reason in skipped:
        print(f"[predict] skipped {path}: {reason}")
    print(f"[predict] {len(rows)} masks ({len(skipped)} skipped) with {predictor.runtime} → {run / 'masks'}, "
          f"{run / 'overlays'}, {out}")
    return 0 if rows else 1


def _write_rows(path: Path, rows: list[dict], fields: list[str]) -> Path:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def run_bench(cfg) -> int:
    from fastmed.engine.run_dir import RunDir, new_run_dir
    from fastmed.engine.seed import seed_everything
    from fastmed.export.bench import bench, format_table

    from fastmed.cfg.export import BenchConfig
    from fastmed.export.bench_artifact import reference_only_options

    defaults = BenchConfig(weights=cfg.weights)
    reference_only_options(cfg.weights, {"calib": cfg.calib, "formats": cfg.formats != defaults.formats,
                                         "exporter": cfg.exporter != defaults.exporter,
                                         "max_drop": cfg.max_drop != defaults.max_drop})
    seed_everything(cfg.seed)
    run = RunDir(new_run_dir("bench", "run", cfg.out))
    run.save_config(cfg)
    result = bench(cfg.weights, run.path / "weights", data=cfg.data, calib=cfg.calib, formats=tuple(cfg.formats),
                   batch=cfg.batch, warmup=cfg.warmup, iters=cfg.iters, max_drop=cfg.max_drop, min_agreement=cfg.min_agreement,
                   min_metric=cfg.min_metric, exporter=cfg.exporter, threads=cfg.threads, seed=cfg.seed,
                   reference=cfg.reference)
    table = format_table(result)
    print(table)
    atomic_write_text(run.path / "bench.md", f"# fastmed bench\n\n{table}\n")
    atomic_write_json(run.path / "bench.json", result.as_dict())
    print(f"[bench] table → {run.path / 'bench.md'}, {run.path / 'bench.json'}")
    if result.failures:
        print("[bench] FAILED the floor --min-metric:\n  " + "\n  ".join(result.failures))
        return 1
    return 0
