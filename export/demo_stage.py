"""Demo stage ``export``: ship the distilled student and the polyp recognizer to ONNX + int8, bench them."""
from __future__ import annotations

from pathlib import Path

from fastmed.demo import DemoContext, DemoSection

ROLES = (("student", "distilled student"), ("recognizer", "polyp recognizer"))


def run(ctx: DemoContext) -> DemoSection:
    from fastmed.engine.atomic import atomic_write_json, atomic_write_text
    from fastmed.export.bench import bench, format_table
    from fastmed.export.quantize import MIN_AGREEMENT

    out = ctx.stage_dir("export")
    data = ctx.data / "polyp"
    tables, metrics, notes = [], {}, []
    for key, label in ROLES:
        weights = ctx.artifacts.get(key)
        if not weights or not Path(weights).is_file():
            notes.append(f"{label}: skipped (no `{key}` checkpoint from an earlier stage)")
            continue
        result = bench(weights, out / key, data=str(data / "test"), calib=str(data / "train"),
                       formats=("pytorch", "onnx", "onnx-int8"), batch=16, warmup=3, iters=30, threads=1, seed=ctx.seed)
        table = format_table(result)
        print(f"[export] {label}:\n{table}")
        atomic_write_text(out / key / "bench.md", f"# {label}\n\n{table}\n")
        atomic_write_json(out / key / "bench.json", result.as_dict())
        tables.append(f"### {label} (`{weights}`)\n\n{table}")
        rows = {r.format: r for r in result.rows}
        torch_row, fp32, int8 = rows["pytorch"], rows["onnx"], rows["onnx-int8"]
        if torch_row.p50_ms and fp32.p50_ms:
            metrics[f"{key}: ORT fp32 speed-up vs PyTorch (b=1 p50)"] = torch_row.p50_ms / fp32.p50_ms
        if fp32.size_mb and int8.size_mb:
            metrics[f"{key}: int8 / fp32 file size"] = int8.size_mb / fp32.size_mb
        if fp32.accuracy is not None and int8.accuracy is not None:
            metrics[f"{key}: int8 accuracy change (points)"] = 100 * (int8.accuracy - fp32.accuracy)
        metrics[f"{key}: rows validated"] = sum(r.status == "exported, validated" for r in result.rows)
        notes.append(_int8_verdict(label, int8))
    return DemoSection(
        title="export: ONNX / ONNX Runtime int8 (TensorRT rows need a GPU)",
        summary="Each checkpoint exported to ONNX (dynamo exporter, dynamic batch, parity-checked against PyTorch) "
                "and to QDQ int8 calibrated on `polyp/train`; accuracy on `polyp/test`. int8 ships only when it "
                f"passes the gate (top-1 agreement with fp32 >= {MIN_AGREEMENT} on `polyp/test`, accuracy drop "
                "<= 1 point). Timings are on this machine's CPU, one thread per backend (a shared machine: medians are noisy)." + ("".join(f"\n\n{n}" for n in notes)),
        metrics=metrics,
        markdown="\n\n".join(tables),
    )


def _int8_verdict(label: str, int8) -> str:
    """One plain sentence: did the int8 model pass the agreement gate, and if not, why not."""
    if int8.status == "exported, validated":
        return f"{label}: int8 passes the gate ({int8.note})."
    if int8.status == "skipped":
        return f"{label}: int8 skipped ({int8.note})."
    return (f"{label}: **int8 is not shipped** — it fails the gate, and fp32 ONNX is the artifact to deploy. "
            f"{int8.note}")
