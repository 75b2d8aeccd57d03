"""One call to check fastmed on a CUDA GPU (``make gpu-check``): tests, kernels, benchmarks, DDP.

Steps, each with a time limit inside an overall budget (``--budget-s``, default
7.5 minutes); a step that fails or runs out of time is recorded, never fatal:

1. ``tests``   – ``pytest -m gpu`` (the tests marked ``gpu``);
2. ``kernels`` – every Triton kernel against its PyTorch reference at several
   sizes, float32 and bfloat16: forward value and input gradients, as
   ``max |triton - reference| / max |reference|`` (the reference runs in
   float32 on the same, rounded, inputs);
3. ``benchmarks`` – the kernel benchmarks against their anchors
   (``bench_sinkhorn``: GeomLoss; ``bench_mil_pool``: torch ``index_add`` and
   padded MIL; ``bench_grad_dot``: ``torch.func``; ``bench_edt``: SciPy), each
   run on a copy of ``benchmarks/`` so its ``results/*.json|md`` land here as
   ``gpu_<name>.json|md``; plus Opacus (per-sample gradients, then the dot)
   against ``per_sample_grad_dot`` and cuCIM's EDT against fastmed's, when
   those packages are installed;
4. ``ddp``     – ``torchrun --standalone --nproc_per_node=2``: an NCCL
   all-reduce and one DDP step whose gradients must agree on both ranks (only
   with two or more GPUs).

Writes ``gpu_check.json`` and ``gpu_check.md`` (device name, driver-side CUDA,
torch / Triton / package versions, every row) into ``--out`` (default
``benchmarks/results``). It uses the PyTorch and Triton already on the machine
(install fastmed there with ``pip install --no-deps -e .``).

``--cpu-dry-run`` runs the same logic on a machine without a GPU, so CI can
test the script: GPU tests are only collected, kernels run through Triton's
interpreter at tiny sizes, benchmarks are listed but not run, and the DDP smoke
test uses gloo on two CPU processes. Its results go to a temporary folder (or
``--out``), never into ``benchmarks/results``.

    make gpu-check                                   # on the GPU machine, < 8 min
    python benchmarks/gpu_check.py --cpu-dry-run     # anywhere (about a minute)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
KERNEL_BENCHMARKS = ("bench_sinkhorn", "bench_mil_pool", "bench_grad_dot", "bench_edt")
OPTIONAL = ("triton", "geomloss", "opacus", "scipy", "cucim", "numba", "pytest")
TOL = {"float32": 1e-3, "bfloat16": 5e-2}  # max error relative to the reference's largest magnitude


class Budget:
    """Seconds left of the overall budget, and each step's share of it."""

    def __init__(self, total_s: float):
        self.end = time.monotonic() + total_s

    def left(self) -> float:
        return self.end - time.monotonic()

    def limit(self, cap_s: float, reserve_s: float = 20.0) -> float:
        """At most ``cap_s``, leaving ``reserve_s`` for the steps after this one."""
        return max(5.0, min(cap_s, self.left() - reserve_s))


def environment(device: str) -> dict:
    """Device, CUDA and package versions."""
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "device": device, "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
           "fastmed": _version("fastmed"), "packages": {p: _version(p) for p in OPTIONAL}}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}")
    else:
        env["device_name"] = f"CPU ({platform.machine()}, {os.cpu_count()} cores): dry run, GPU parts skipped"
    return env


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def run(cmd: list[str], timeout: float, cwd: Path = ROOT, env: dict | None = None) -> dict:
    """A subprocess with a time limit: ``{"rc", "seconds", "tail"}`` (rc ``"timeout"`` when it ran out)."""
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
        rc, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = "timeout", (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    return {"rc": rc, "seconds": round(time.monotonic() - t0, 1), "tail": out[-1500:]}


def step_tests(dry: bool, budget: Budget) -> dict:
    """``pytest -m gpu`` (dry run: ``--collect-only`` of the kernel tests, which needs no GPU)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/kernels" if dry else "tests"]
    res = run(cmd + (["--collect-only"] if dry else []), budget.limit(180, 240), env={"FASTMED_PROGRESS": "0"})
    last = [line for line in res["tail"].splitlines() if line.strip()]
    res["summary"] = last[-1] if last else ""
    res["ok"] = res["rc"] == 0
    return res


# ---- kernels: Triton against the reference -------------------------------------------------------------------------------

def _rel(got, want) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-12))


def _compare(name: str, size: str, dtype, triton_fn, reference_fn, inputs: list) -> dict:
    """Forward value and gradients of every input of ``triton_fn`` (in ``dtype``) against ``reference_fn`` (float32)."""
    import torch

    xs = [t.detach().to(dtype).clone().requires_grad_(t.is_floating_point()) for t in inputs]
    refs = [t.detach().float().requires_grad_(t.is_floating_point()) for t in xs]
    got, want = triton_fn(*xs), reference_fn(*refs)
    up = torch.randn(want.shape, device=want.device, generator=torch.Generator(want.device).manual_seed(1))
    (got.float() * up).sum().backward()
    (want * up).sum().backward()
    grad_err = max((_rel(a.grad, b.grad) for a, b in zip(xs, refs) if a.requires_grad), default=0.0)
    tol = TOL[str(dtype).replace("torch.", "")]
    fwd = _rel(got, want)
    return {"kernel": name, "size": size, "dtype": str(dtype).replace("torch.", ""), "forward_rel_err": round(fwd, 7),
            "grad_rel_err": round(grad_err, 7), "tol": tol, "ok": bool(fwd <= tol and grad_err <= tol)}


def kernel_cases(device: str, dry: bool):
    """``(name, size label, triton fn, reference fn, inputs)`` for every Triton kernel at several sizes."""
    import torch
    import torch.nn.functional as F

    from fastmed.kernels import mil_attention_pool, sinkhorn_divergence
    from fastmed.kernels.grad_dot_triton import conv_output_dot_triton
    from fastmed.kernels.mil_pool import bag_offsets
    from fastmed.kernels.mil_pool_reference import mil_attention_pool_reference

    g = torch.Generator(device).manual_seed(0)
    rand = lambda *s: torch.randn(*s, device=device, generator=g)  # noqa: E731
    bags = [[5, 1, 9]] if dry else [[5, 1, 9], [4000, 1, 517, 2000], [3569] * 16]
    for lengths in bags:
        d = 8 if dry else (64 if sum(lengths) < 10_000 else 1024)
        off = bag_offsets(lengths).to(device)
        for normalize in ("sigmoid", "softmax"):
            yield (f"mil_attention_pool ({normalize})", f"bags {lengths[:4]}{'...' if len(lengths) > 4 else ''} x {d}",
                   lambda h, s, o=off, n=normalize: mil_attention_pool(h, s, o, normalize=n, backend="triton"),
                   lambda h, s, o=off, n=normalize: mil_attention_pool_reference(h, s, o, normalize=n),
                   [rand(sum(lengths), d), rand(sum(lengths))])
    clouds = [(2, 6, 5, 3)] if dry else [(2, 50, 40, 3), (4, 500, 300, 32), (8, 2000, 2000, 3)]
    for b, n, m, d in clouds:
        yield ("sinkhorn_divergence", f"B={b} N={n} M={m} D={d}",
               lambda x, y: sinkhorn_divergence(x, y, blur=0.1, backend="triton"),
               lambda x, y: sinkhorn_divergence(x, y, blur=0.1, backend="torch"), [rand(b, n, d), rand(b, m, d)])
    convs = [(2, 3, 7, 9, 5, 3)] if dry else [(2, 3, 7, 9, 5, 3), (8, 16, 32, 32, 32, 3), (16, 64, 64, 64, 64, 3)]
    for n, c_in, h, w, c_out, k in convs:
        x, wt = rand(n, c_in, h, w), rand(c_out, c_in, k, k)
        y = rand(*F.conv2d(x, wt, padding=1).shape)
        yield ("conv_output_dot (grad_dot)", f"x {n}x{c_in}x{h}x{w}, w {c_out}x{c_in}x{k}x{k}",
               lambda x, wt, y: conv_output_dot_triton(x, wt, y, (1, 1), (1, 1), (1, 1), 1),
               lambda x, wt, y: (y * F.conv2d(x, wt, None, 1, 1)).flatten(1).sum(1), [x, wt, y])


def step_kernels(device: str, dry: bool, budget: Budget) -> list[dict]:
    import torch

    rows = []
    for name, size, tri, ref, inputs in kernel_cases(device, dry):
        for dtype in (torch.float32, torch.bfloat16):
            if budget.left() < 60:
                rows.append({"kernel": name, "size": size, "dtype": str(dtype), "ok": False, "error": "out of time budget"})
                continue
            try:
                rows.append(_compare(name, size, dtype, tri, ref, inputs))
            except Exception as exc:  # noqa: BLE001 - a failing kernel is a finding, recorded
                rows.append({"kernel": name, "size": size, "dtype": str(dtype).replace("torch.", ""), "ok": False,
                             "error": f"{type(exc).__name__}: {exc}"[:300]})
    return rows


# ---- benchmarks -----------------------------------------------------------------------------------------------------------

def step_benchmarks(device: str, dry: bool, out: Path, budget: Budget) -> list[dict]:
    """Each kernel benchmark on a copy of ``benchmarks/``; its json/md copied to ``out/gpu_<name>.*``."""
    rows = []
    work = Path(tempfile.mkdtemp(prefix="gpu_check_bench_"))
    try:
        copy = work / "benchmarks"
        shutil.copytree(HERE, copy, ignore=shutil.ignore_patterns("results", "__pycache__"))
        for i, name in enumerate(KERNEL_BENCHMARKS):
            args = [] if name == "bench_edt" else ["--device", device]  # the EDT is a CPU (Numba) kernel
            cmd = [sys.executable, str(copy / f"{name}.py"), *args]
            if dry:
                rows.append({"benchmark": name, "command": " ".join(cmd[1:]), "rc": "skipped (dry run)"})
                continue
            res = run(cmd, budget.limit(100, 40 * (len(KERNEL_BENCHMARKS) - i)), cwd=work)
            copied = []
            for f in sorted((copy / "results").glob("*")) if (copy / "results").is_dir() else []:
                if f.suffix in (".json", ".md"):
                    shutil.copy(f, out / f"gpu_{f.name}")
                    copied.append(f"gpu_{f.name}")
                f.unlink()
            rows.append({"benchmark": name, "command": " ".join(cmd[1:]), **res, "results": copied})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for anchor in (opacus_anchor, cucim_anchor):
        try:
            rows.append(anchor(device, dry))
        except Exception as exc:  # noqa: BLE001 - an anchor that breaks is recorded
            rows.append({"benchmark": anchor.__name__, "rc": f"error: {type(exc).__name__}: {exc}"[:300], "ok": False})
    for r in rows:
        r.setdefault("ok", r.get("rc") == 0 or str(r.get("rc", "")).startswith("skipped"))
    return rows


def _median_s(fn, device: str, repeats: int = 5) -> float:
    import torch

    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def opacus_anchor(device: str, dry: bool) -> dict:
    """``per_sample_grad_dot`` vs Opacus per-sample gradients followed by the dot, on a small CNN."""
    if _version("opacus") is None:
        return {"benchmark": "opacus vs per_sample_grad_dot", "rc": "skipped (opacus not installed)"}
    import torch
    from opacus import GradSampleModule

    from fastmed.kernels import per_sample_grad_dot

    torch.manual_seed(0)
    n, side = (4, 8) if dry else (64, 32)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * side * side, 2)).to(device)
    x, y = torch.randn(n, 3, side, side, device=device), torch.randint(0, 2, (n,), device=device)
    direction = {k: torch.randn_like(v) for k, v in model.named_parameters()}
    loss_fn = lambda out, t: torch.nn.functional.cross_entropy(out, t, reduction="none")  # noqa: E731
    gsm = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")  # a copy: Opacus' hooks stay off the model fastmed differentiates

    def with_opacus():
        gsm.zero_grad(set_to_none=True)
        loss_fn(gsm(x), y).sum().backward()  # per-sample grads of the summed loss = those of each sample's loss
        return sum((p.grad_sample.flatten(1) * direction[k.removeprefix("_module.")].flatten()).sum(1)
                   for k, p in gsm.named_parameters())

    ours = lambda: per_sample_grad_dot(model, loss_fn, x, y, direction)  # noqa: E731
    want, got = with_opacus(), ours()
    err = _rel(got, want)
    res = {"benchmark": "opacus vs per_sample_grad_dot", "size": f"{n} x 3x{side}x{side}", "rel_err": round(err, 7),
           "ok": err <= TOL["float32"]}
    if not dry:
        t_op, t_ours = _median_s(with_opacus, device), _median_s(ours, device)
        res.update(opacus_ms=round(t_op * 1e3, 3), fastmed_ms=round(t_ours * 1e3, 3), speedup=round(t_op / t_ours, 2))
    return res


def cucim_anchor(device: str, dry: bool) -> dict:
    """cuCIM's GPU EDT vs fastmed's (CPU, Numba) on a batch of masks, when cuCIM is installed."""
    if _version("cucim") is None or dry or device != "cuda":
        return {"benchmark": "cucim edt vs fastmed edt", "rc": "skipped (cucim not installed)" if _version("cucim") is None
                else "skipped (dry run)"}
    import cupy
    import numpy as np
    from cucim.core.operations.morphology import distance_transform_edt as cucim_edt

    from fastmed.kernels import distance_transform_edt_batch

    masks = np.random.default_rng(0).random((16, 512, 512)) > 0.02
    gpu = cupy.asarray(masks)
    want = np.stack([cupy.asnumpy(cucim_edt(m)) for m in gpu])
    got = distance_transform_edt_batch(masks)
    t_cucim = _median_s(lambda: [cucim_edt(m) for m in gpu] and cupy.cuda.Device().synchronize(), "cpu")
    t_ours = _median_s(lambda: distance_transform_edt_batch(masks), "cpu")
    diff = float(np.abs(np.asarray(got) - want).max())
    return {"benchmark": "cucim edt vs fastmed edt", "size": "16 x 512 x 512", "max_abs_diff": diff, "ok": diff <= 1e-4,
            "cucim_ms": round(t_cucim * 1e3, 2), "fastmed_cpu_ms": round(t_ours * 1e3, 2)}


# ---- DDP ---------------------------------------------------------------------------------------------------------------------

DDP_WORKER = '''
import os, torch, torch.distributed as dist
backend = os.environ["GPU_CHECK_BACKEND"]
dist.init_process_group(backend)
rank, world = dist.get_rank(), dist.get_world_size()
device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}") if backend == "nccl" else torch.device("cpu")
if backend == "nccl":
    torch.cuda.set_device(device)
t = torch.full((4,), float(rank + 1), device=device)
dist.all_reduce(t)
assert torch.allclose(t, torch.full_like(t, world * (world + 1) / 2)), t
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2).to(device), device_ids=[device] if backend == "nccl" else None)
x = torch.randn(4, 8, device=device) + rank
model(x).square().sum().backward()
g = model.module.weight.grad.clone()
others = [torch.zeros_like(g) for _ in range(world)]
dist.all_gather(others, g)
assert all(torch.equal(o, g) for o in others), "DDP gradients differ across ranks"
if rank == 0:
    print(f"ddp ok: {backend}, world {world}, all-reduce {t[0].item()}")
dist.destroy_process_group()
'''


def step_ddp(device: str, dry: bool, budget: Budget) -> dict:
    """2-process ``torchrun``: NCCL on two GPUs, or gloo on the CPU in a dry run; skipped with one GPU."""
    import torch

    if not dry and torch.cuda.device_count() < 2:
        return {"rc": f"skipped ({torch.cuda.device_count()} GPU: the NCCL test needs 2)", "ok": True}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_ddp_"))
    try:
        script = work / "ddp_worker.py"
        script.write_text(DDP_WORKER)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
        res = run(cmd, budget.limit(120, 10), env={"GPU_CHECK_BACKEND": "gloo" if dry else "nccl", "OMP_NUM_THREADS": "1"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["backend"] = "gloo" if dry else "nccl"
    res["ok"] = res["rc"] == 0 and "ddp ok" in res["tail"]
    return res


# ---- report ------------------------------------------------------------------------------------------------------------------

def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"# GPU check: {env['device_name']}", "",
             f"torch {env['torch']} (CUDA {env['torch_cuda']}), Triton {env['packages']['triton']}, fastmed {env['fastmed']}, "
             f"GPUs: {env['gpus']}; packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v) + ". "
             f"Total {res['seconds']} s (budget {res['budget_s']} s)." + (" **CPU dry run: GPU parts skipped.**" if res["dry_run"] else ""),
             "", f"## gpu tests: {res['tests']['summary']} (rc {res['tests']['rc']}, {res['tests']['seconds']} s)", "",
             "## Triton kernels vs reference", "", "| kernel | size | dtype | forward rel. err | grad rel. err | tol | ok |",
             "|---|---|---|---|---|---|---|"]
    for r in res["kernels"]:
        lines.append(f"| {r['kernel']} | {r['size']} | {r['dtype']} | {r.get('forward_rel_err', '')} | {r.get('grad_rel_err', '')} | "
                     f"{r.get('tol', '')} | {'yes' if r['ok'] else 'NO ' + r.get('error', '')} |")
    lines += ["", "## Benchmarks vs anchors", ""]
    for r in res["benchmarks"]:
        detail = {k: v for k, v in r.items() if k not in ("benchmark", "tail")}
        lines.append(f"- **{r['benchmark']}**: {json.dumps(detail)}")
    ddp = res["ddp"]
    lines += ["", f"## DDP smoke test: {ddp.get('backend', '')} rc {ddp['rc']} ({ddp.get('seconds', 0)} s)", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-dry-run", action="store_true", help="no GPU: test this script's logic, GPU parts skipped")
    ap.add_argument("--out", help="results folder (default benchmarks/results; dry run: a new temporary folder)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="overall time budget in seconds")
    ap.add_argument("--skip", action="append", default=[], choices=("tests", "kernels", "benchmarks", "ddp"))
    args = ap.parse_args()
    dry = args.cpu_dry_run
    if dry:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported: kernels run on the CPU
    import torch

    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run on the GPU machine, or add --cpu-dry-run to test the script's logic")
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="gpu_check_dry_")) if dry else RESULTS)
    if dry and out.resolve() == RESULTS.resolve():
        raise SystemExit(f"--cpu-dry-run does not write into {RESULTS}; give another --out")
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if dry else "cuda"
    budget, t0 = Budget(args.budget_s), time.monotonic()
    res = {"dry_run": dry, "budget_s": args.budget_s, "environment": environment(device)}
    skipped = {"rc": "skipped (--skip)", "summary": "skipped", "seconds": 0, "ok": True}
    res["tests"] = skipped if "tests" in args.skip else step_tests(dry, budget)
    res["kernels"] = [] if "kernels" in args.skip else step_kernels(device, dry, budget)
    res["benchmarks"] = [] if "benchmarks" in args.skip else step_benchmarks(device, dry, out, budget)
    res["ddp"] = skipped if "ddp" in args.skip else step_ddp(device, dry, budget)
    res["seconds"] = round(time.monotonic() - t0, 1)
    res["ok"] = bool(res["tests"]["ok"] and res["ddp"]["ok"] and all(r["ok"] for r in res["kernels"] + res["benchmarks"]))
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(res))
    print(f"gpu check {'passed' if res['ok'] else 'FAILED'} in {res['seconds']} s; wrote {out / 'gpu_check'}.json and .md")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
