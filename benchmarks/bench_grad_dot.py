"""Benchmark per-sample gradient dot products against torch.func and one forward+backward.

For M inputs and a fixed direction G (one tensor per parameter), every variant
computes the same ``(M,)`` vector ``d_m = <grad l_m, G>``:

* ``fastmed auto``  – ``per_sample_grad_dot`` with ``backend="auto"`` (on the CPU: the
                      ``grad_dot_cpu`` rules; Triton-fused on CUDA);
* ``fastmed torch`` – ``backend="torch"``: the reference contractions;
* ``torch.func``    – ``vmap(grad)`` materializing the M per-sample gradients (the anchor);
* ``fwd+bwd``       – one plain forward + backward of the batch (all weight gradients):
                      the cost floor of the method (issue 17);
* ``fwd+input bwd`` – a forward and a backward to the input only (no weight gradient): the
                      part of the method that no contraction rule can speed up;
* ``method floor``  – ``per_sample_grad_dot``'s own forward, hooks and shortened backward with
                      each convolution's contraction replaced by ONE batch weight-gradient call
                      of that layer (oneDNN's fastest kernel for these FLOPs, called on its own;
                      the sum over samples, so not the answer: a timing floor for any exact
                      contraction built from one library call per layer). Other layers keep
                      auto's rules.
* ``no contractions`` – the same forward, hooks and shortened backward with every layer's
                      contraction left out (zeros): what the method costs before any
                      contraction, so ``auto`` minus it is what its contractions cost.

Two networks: ``convnet``, the issue's 6-convolution net (strided, dilated, grouped and
transposed convolutions, GroupNorm, a linear head; 64x64 RGB, 10 classes), and the
project's ``UNet(base_width=8, depth=3)`` (64x64, per-image pixel BCE); M = 8, 32, 128.

Time: all variants in this process, interleaved, ``--repeats`` rounds after one warm-up;
the median wall time and the median CPU time of the process (``time.process_time``, which
a shared machine inflates much less; ratios use it). Peak memory: on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the growth of the peak RSS (VmHWM, reset
first) during one call in a fresh subprocess (Linux). FLOP bound: the FLOPs each variant
executes (``torch.utils.flop_counter``) divided by the GEMM throughput measured here
(a square float32 matmul). ``--layers`` adds the contraction ways of ``grad_dot_cpu``
and fwd+bwd's batch weight gradient on 3x3 layers of one FLOP count and on the nets'
pointwise layers (auto times the ways per layer on first use).

    .venv/bin/python benchmarks/bench_grad_dot.py [--quick] [--threads 1] [--layers]

Writes ``benchmarks/results/grad_dot.json`` and ``grad_dot.md`` (``--quick``: a temporary folder).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fastmed.kernels import per_sample_grad_dot
from fastmed.kernels.grad_dot_cpu import WAYS, conv_weight_grad, layer_dot_cpu, way_dot, ways_for
from fastmed.kernels.grad_dot_reference import CONV_TRANSPOSE_TYPES, CONV_TYPES, per_sample_grad_dot_reference
from fastmed.nets.unet import UNet
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)
from quick import add_quick_options, results_folder

VARIANTS = ("fastmed auto", "fastmed torch", "torch.func", "fwd+bwd", "fwd+input bwd", "method floor", "no contractions")
MEMORY_VARIANTS = ("fastmed auto", "torch.func", "fwd+bwd")
FLOP_VARIANTS = ("fastmed auto", "fastmed torch", "torch.func", "fwd+bwd")


class ConvNet6(nn.Module):
    """The issue's network: six convolutions (strided, dilated, grouped, transposed), GroupNorm, a linear head.

    ``(M, 3, 64, 64)`` -> ``(M, classes)`` logits.
    """

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        w = width
        self.convs = nn.ModuleList([
            nn.Conv2d(3, w, 3, stride=2, padding=1),                 # 32x32, strided
            nn.Conv2d(w, w, 3, padding=2, dilation=2),               # dilated
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, groups=2),   # 16x16, strided + grouped
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, groups=4),         # grouped
            nn.ConvTranspose2d(2 * w, w, 2, stride=2),               # 32x32, transposed
            nn.Conv2d(w, w, 3, stride=2, padding=1),                 # 16x16
        ])
        self.norms = nn.ModuleList(nn.GroupNorm(8, c.out_channels) for c in self.convs)
        self.head = nn.Linear(w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return self.head(x.mean((2, 3)))


def per_image_bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pixel BCE averaged per image: ``(M, 1, H, W)`` logits -> ``(M,)``."""
    return F.binary_cross_entropy_with_logits(out, y, reduction="none").flatten(1).mean(1)


def per_sample_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample: ``(M, classes)`` logits, ``(M,)`` labels -> ``(M,)``."""
    return F.cross_entropy(out, y, reduction="none")


LOSSES = {"convnet": per_sample_ce, "unet": per_image_bce}


def make_problem(net: str, m: int, device: str, seed: int = 0):
    """(model, x (M, 3, 64, 64), targets, direction) on ``device``."""
    torch.manual_seed(seed)
    model = (ConvNet6() if net == "convnet" else UNet(base_width=8, depth=3)).to(device)
    x = torch.randn(m, 3, 64, 64, device=device)
    if net == "convnet":
        y = torch.randint(0, 10, (m,), device=device)
    else:
        y = (torch.rand(m, 1, 64, 64, device=device) > 0.7).float()
    direction = {k: torch.randn_like(v) for k, v in model.named_parameters()}
    return model, x, y, direction


def run_torch_func(model, loss_fn, x, y, g):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, xi, yi):
        return loss_fn(torch.func.functional_call(model, p, (xi[None],)), yi[None])[0]

    grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, x, y)
    return sum((grads[k] * g[k]).flatten(1).sum(1) for k in g)


def run_fwd_bwd(model, loss_fn, x, y, g):
    grads = torch.autograd.grad(loss_fn(model(x), y).sum(), list(model.parameters()))
    return grads[0].sum().reshape(1)


def run_fwd_input_bwd(model, loss_fn, x, y, g):
    xg = x.detach().requires_grad_(True)
    return torch.autograd.grad(loss_fn(model(xg), y).sum(), [xg])[0].sum().reshape(1)


def batch_weight_grad_dot(module, a, delta, g, node=None):
    """Timing stand-in of a convolution's contraction: its batch weight gradient (one call); other layers: auto's rule."""
    if isinstance(module, (*CONV_TYPES, *CONV_TRANSPOSE_TYPES)):
        conv_weight_grad(module, a, delta, module.weight, module.groups)
        return delta.new_zeros(delta.shape[0])
    return layer_dot_cpu(module, a, delta, g, node)


def no_contraction(module, a, delta, g, node=None):
    """Timing stand-in: no contraction at all (every layer contributes zeros)."""
    return delta.new_zeros(delta.shape[0])


RUNNERS = {
    "fastmed auto": lambda model, loss_fn, x, y, g: per_sample_grad_dot(model, loss_fn, x, y, g),
    "fastmed torch": lambda model, loss_fn, x, y, g: per_sample_grad_dot(model, loss_fn, x, y, g, backend="torch"),
    "torch.func": run_torch_func,
    "fwd+bwd": run_fwd_bwd,
    "fwd+input bwd": run_fwd_input_bwd,
    "method floor": lambda model, loss_fn, x, y, g: per_sample_grad_dot_reference(model, loss_fn, x, y, g, layer_dot=batch_weight_grad_dot),
    "no contractions": lambda model, loss_fn, x, y, g: per_sample_grad_dot_reference(model, loss_fn, x, y, g, layer_dot=no_contraction),
}


def relative_errors(net, model, x, y, g) -> dict[str, float]:
    """max |d - d64| / max |d64| of each float32 variant, against torch.func in float64."""
    loss_fn = LOSSES[net]
    ref = run_torch_func(model.double(), loss_fn, x.double(), y.double() if y.is_floating_point() else y,
                         {k: v.double() for k, v in g.items()})
    model.float()
    return {n: float((RUNNERS[n](model, loss_fn, x, y, g).double() - ref).abs().max() / ref.abs().max())
            for n in ("fastmed auto", "fastmed torch", "torch.func")}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_variants(net, model, x, y, g, device: str, repeats: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds and minor page faults of every variant, interleaved rounds after one warm-up round."""
    loss_fn = LOSSES[net]
    wall = {n: [] for n in VARIANTS}
    cpu = {n: [] for n in VARIANTS}
    faults = {n: [] for n in VARIANTS}
    for i in range(repeats + 1):
        for n in VARIANTS:
            _sync(device)
            w0, c0, f0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            RUNNERS[n](model, loss_fn, x, y, g)
            _sync(device)
            if i:
                wall[n].append(time.perf_counter() - w0)
                cpu[n].append(time.process_time() - c0)
                faults[n].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {n: {"wall_s": statistics.median(wall[n]), "cpu_s": statistics.median(cpu[n]),
                "page_faults": statistics.median(faults[n])} for n in VARIANTS}


def allocator_note() -> str:
    """How freed memory goes back to the OS here (it decides how many page faults each call pays)."""
    tuned = {k: os.environ[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if k in os.environ}
    if tuned:
        return ("Allocator: glibc with " + " ".join(f"{k}={v}" for k, v in tuned.items())
                + " (freed memory stays in the process: few page faults; compute only).")
    return ("Allocator: glibc defaults (a large temporary may come from a fresh mapping and pay page faults; how "
            "many depends on what ran before: see the page-fault column).")


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **_) -> int:
    """FLOPs of ``aten.convolution_backward``: each gradient asked for costs one forward convolution.

    (flop_counter's own rule counts a grouped weight gradient ``groups`` times over.)
    """
    spatial = x_shape[2:] if transposed else grad_out_shape[2:]
    one = 2 * x_shape[0] * math.prod(w_shape) * math.prod(spatial)
    return one * (int(output_mask[0]) + int(output_mask[1]))


def flops(net, model, x, y, g) -> dict[str, int]:
    """FLOPs each variant executes (convolutions, matmuls; ``torch.utils.flop_counter``; its module
    tracking cannot follow a backward to a leaf input, so ``fwd+input bwd`` is not counted, nor the floor)."""
    out = {}
    for n in FLOP_VARIANTS:
        with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}) as counter:
            RUNNERS[n](model, LOSSES[net], x, y, g)
        out[n] = counter.get_total_flops()
    return out


def gemm_flops_per_s(device: str, size: int = 1024, repeats: int = 5) -> float:
    """Measured float32 GEMM throughput (best of ``repeats`` square matmuls)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    clock = time.perf_counter if device.startswith("cuda") else time.process_time  # CPU: like the variants
    for _ in range(repeats + 1):
        _sync(device)
        t0 = clock()
        a @ b
        _sync(device)
        best = min(best, clock() - t0)
    return 2 * size**3 / best


def _vm_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def measure_rss(spec: str) -> None:
    """Subprocess entry: print the peak-RSS growth (MiB) of one call of a variant, after a warm-up call at M=2
    (a warm-up at full size would leave its freed pages in the allocator and hide the peak). For ``auto``
    the measured call is its first at this size, so it includes timing its contraction ways once."""
    name, net, m = spec.split(":")
    model, x, y, g = make_problem(net, 2, "cpu")
    RUNNERS[name](model, LOSSES[net], x, y, g)
    model, x, y, g = make_problem(net, int(m), "cpu")
    Path("/proc/self/clear_refs").write_text("5")
    before = _vm_kib("VmRSS")
    RUNNERS[name](model, LOSSES[net], x, y, g)
    print((_vm_kib("VmHWM") - before) / 1024)


def peak_memory_mb(name: str, net: str, m: int, device: str, threads: int) -> float:
    if device.startswith("cuda"):
        model, x, y, g = make_problem(net, m, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        RUNNERS[name](model, LOSSES[net], x, y, g)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    cmd = [sys.executable, __file__, "--measure-rss", f"{name}:{net}:{m}", "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


CROSSOVER_LAYERS = (  # (name, layer, input side): 3x3 convs of one FLOP count, then the pointwise layers of the nets
    *((f"3x3 conv, C {c}", nn.Conv2d(c, c, 3, padding=1, bias=False), side) for c, side in ((8, 64), (16, 32), (32, 16), (64, 8))),
    ("1x1 conv 16 -> 32", nn.Conv2d(16, 32, 1, bias=False), 32),
    ("2x2 stride-2 up-conv 64 -> 32", nn.ConvTranspose2d(64, 32, 2, stride=2, bias=False), 16),
)


def layer_crossover(m: int, repeats: int) -> list[dict]:
    """CPU seconds of each contraction way that applies (``ways_for``) and of the batch weight gradient, per layer."""
    rows = []
    for name, conv, side in CROSSOVER_LAYERS:
        a = torch.randn(m, conv.in_channels, side, side)
        delta, gw = torch.randn_like(conv(a)), torch.randn_like(conv.weight)
        ways = {w: (lambda w=w: way_dot(conv, a, delta, gw, None, w)) for w in ways_for(conv)}
        ways["batch weight grad (fwd+bwd's)"] = lambda: conv_weight_grad(conv, a, delta, gw, 1)
        times = {k: [] for k in ways}
        for i in range(repeats + 1):
            for k, f in ways.items():
                c0 = time.process_time()
                f()
                if i:
                    times[k].append(time.process_time() - c0)
        rows.append({"layer": name, "side": side, "M": m, **{k: round(statistics.median(v), 5) for k, v in times.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quick_options(ap, "M = 2, 4, 8, two rounds, no memory subprocesses")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per size (default 5; --quick 2)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--layers", action="store_true", help="also time the contraction ways of grad_dot_cpu per layer")
    ap.add_argument("--measure-rss", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure_rss:
        measure_rss(args.measure_rss)
        return
    folder = results_folder(args, "grad_dot")
    machine = machine_note()  # load before anything runs
    sizes = (2, 4, 8) if args.quick else (8, 32, 128)
    repeats = args.repeats or (2 if args.quick else 5)
    gemm = gemm_flops_per_s(args.device)
    rows = []
    for net in ("convnet", "unet"):
        for m in sizes:
            model, x, y, g = make_problem(net, m, args.device)
            err = relative_errors(net, model, x, y, g)
            t = time_variants(net, model, x, y, g, args.device, repeats)
            fl = flops(net, model, x, y, g)
            mem = {} if args.quick else {n: round(peak_memory_mb(n, net, m, args.device, args.threads), 1) for n in MEMORY_VARIANTS}
            cpu = {n: t[n]["cpu_s"] for n in VARIANTS}
            row = {
                "net": net, "M": m,
                "median_wall_s": {n: round(t[n]["wall_s"], 4) for n in VARIANTS},
                "median_cpu_s": {n: round(v, 4) for n, v in cpu.items()},
                "median_page_faults": {n: t[n]["page_faults"] for n in VARIANTS},
                "auto_vs_fwd_bwd": round(cpu["fastmed auto"] / cpu["fwd+bwd"], 3),
                "torch_vs_fwd_bwd": round(cpu["fastmed torch"] / cpu["fwd+bwd"], 3),
                "torch_func_vs_fwd_bwd": round(cpu["torch.func"] / cpu["fwd+bwd"], 3),
                "input_bwd_vs_fwd_bwd": round(cpu["fwd+input bwd"] / cpu["fwd+bwd"], 3),
                "floor_vs_fwd_bwd": round(cpu["method floor"] / cpu["fwd+bwd"], 3),
                "no_contractions_vs_fwd_bwd": round(cpu["no contractions"] / cpu["fwd+bwd"], 3),
                "speedup_vs_torch_func": round(cpu["torch.func"] / cpu["fastmed auto"], 3),
                "gflop": {n: round(v / 1e9, 3) for n, v in fl.items()},
                "flop_bound_s": {n: round(v / gemm, 4) for n, v in fl.items()},
                "peak_mem_mib": mem,
                "max_rel_err_vs_float64": err,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    layers = layer_crossover(32 if not args.quick else 4, repeats) if args.layers else []
    result = {
        "op": "per_sample_grad_dot",
        "nets": {"convnet": f"ConvNet6 (this script), {sum(p.numel() for p in ConvNet6().parameters())} parameters, CE over 10 classes",
                 "unet": f"UNet(base_width=8, depth=3), {sum(p.numel() for p in UNet(base_width=8, depth=3).parameters())} parameters, pixel BCE"},
        "input": "(M, 3, 64, 64) float32",
        "device": args.device,
        "machine": {"platform": platform.platform(), "threads": args.threads, "note": machine, "note_after": machine_note(),
                    "allocator": allocator_note()},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "repeats": repeats,
        "gemm_gflop_s": round(gemm / 1e9, 2),
        "rows": rows,
        "layer_crossover": layers,
    }
    lines = [
        "# per_sample_grad_dot benchmark",
        "",
        f"Input {result['input']}; device {args.device}, {args.threads} thread(s); median of {repeats} interleaved rounds. "
        f"{machine}; after: {result['machine']['note_after']}. Measured GEMM throughput {result['gemm_gflop_s']} GFLOP/s. "
        f"{result['machine']['allocator']}",
        "",
        f"convnet: {result['nets']['convnet']}. unet: {result['nets']['unet']}.",
        "",
        "Ratios use the median CPU time of this process (wall times, noisier on a shared machine, in the JSON). "
        "FLOP bound = executed FLOPs / measured GEMM throughput. Method floor = auto's forward, hooks and shortened "
        "backward with each convolution's contraction replaced by one batch weight-gradient call (a timing floor "
        "for contractions of one library call per layer; not the answer). No contractions = the same machinery with "
        "every contraction left out (auto minus it = what the contractions cost).",
        "",
        "| net | M | auto (s) | torch (s) | torch.func (s) | fwd+bwd (s) | auto / fwd+bwd | torch / fwd+bwd | torch.func / fwd+bwd "
        "| x torch.func | fwd+input bwd / fwd+bwd | no contractions / fwd+bwd | method floor / fwd+bwd | auto / its FLOP bound "
        "| fwd+bwd / its FLOP bound | peak MiB auto / torch.func / fwd+bwd | page faults per call auto / fwd+bwd |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, b, mem = r["median_cpu_s"], r["flop_bound_s"], r["peak_mem_mib"]
        mem_s = " / ".join(str(mem[n]) for n in MEMORY_VARIANTS) if mem else "–"
        lines.append(
            f"| {r['net']} | {r['M']} | {c['fastmed auto']:.3f} | {c['fastmed torch']:.3f} | {c['torch.func']:.3f} | {c['fwd+bwd']:.3f} "
            f"| {r['auto_vs_fwd_bwd']:.2f} | {r['torch_vs_fwd_bwd']:.2f} | {r['torch_func_vs_fwd_bwd']:.2f} | {r['speedup_vs_torch_func']:.2f} "
            f"| {r['input_bwd_vs_fwd_bwd']:.2f} | {r['no_contractions_vs_fwd_bwd']:.2f} | {r['floor_vs_fwd_bwd']:.2f} "
            f"| {c['fastmed auto'] / max(b['fastmed auto'], 1e-9):.1f} | {c['fwd+bwd'] / max(b['fwd+bwd'], 1e-9):.1f} | {mem_s} "
            f"| {r['median_page_faults']['fastmed auto']:.0f} / {r['median_page_faults']['fwd+bwd']:.0f} |")
    if layers:
        cols = [*WAYS, "batch weight grad (fwd+bwd's)"]
        lines += ["", f"Per-layer contraction ways (M = {layers[0]['M']}, median CPU s; – where a way does not apply):", "",
                  "| layer | input side | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        lines += [f"| {r['layer']} | {r['side']} | " + " | ".join(f"{r[c]:.4f}" if c in r else "–" for c in cols) + " |"
                  for r in layers]
    lines += ["", f"torch {torch.__version__}; max relative error of each float32 variant against torch.func in float64 "
              "in the JSON (`max_rel_err_vs_float64`).", ""]
    (folder / "grad_dot.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / "grad_dot.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {folder / 'grad_dot'}.json and .md")


if __name__ == "__main__":
    main()
