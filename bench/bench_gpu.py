"""Benchmark: the torch backend on CUDA against the same solves on the CPU of the same machine.

    python bench/bench_gpu.py [--lasso 2000x2000 20000x5000] [--ot 500 1000] [--ot-cpu-max 500]
        [--steps 20] [--skip-lasso] [--skip-ot] [--skip-train]

1. lasso (bench_lasso.make_data, lam = 0.1 lam_max): in-process re-solves (after a warm-up solve of
   the same structure) at tol 1e-8, CPU vs CUDA, float64; the objective of each in float64 NumPy and
   their relative difference.
2. class OT with sum-of-norms (bench_class_ot's data and spec; restarted PDHG): CUDA float64 and
   float32 at tol 1e-6 against a CUDA float64 run at tol 1e-7 (f_ref), and the CPU float64 run at
   sizes <= --ot-cpu-max (the machine's CPU threads: the same-process baseline).
3. ResNet-18 (3x32x32, batch 64) training step on CUDA: plain vs group_l2 on all convs + l1 on an
   activation + nuclear prox on layer4.1.conv2 every 10 steps / every step (bench_train_spectral's
   network and spec), wall time per step with CUDA synchronised, medians of blocks of 10 steps.

No timing is asserted; ratios are from this one run. Needs CUDA (prints why and exits otherwise).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_class_ot as ot  # noqa: E402
import bench_lasso  # noqa: E402
import regspec  # noqa: E402


def _sync() -> None:
    torch.cuda.synchronize()


def _timed_solve(spec_path: Path, **kw):
    _sync()
    t0 = time.perf_counter()
    r = regspec.solve(regspec.load(spec_path), backend="torch", **kw)
    _sync()
    return time.perf_counter() - t0, r


def bench_lasso_devices(sizes: list[str]) -> None:
    print("1. lasso, in-process re-solve at tol 1e-8 (float64), wall s")
    for size in sizes:
        n, p = (int(v) for v in size.split("x"))
        X, y, alpha = bench_lasso.make_data(n, p, 0, 0.1)
        tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_lasso_"))
        np.savez(tmp / "lasso.npz", X=X, y=y)
        (tmp / "lasso.reg").write_text(
            "problem lasso {\n  data X = load(\"lasso.npz\", \"X\")\n  data y = load(\"lasso.npz\", \"y\")\n"
            f"  param lam = {alpha!r} >= 0\n  var w[cols(X)]\n"
            "  minimize sum_squares(X @ w - y) / (2 * rows(X)) + lam * norm1(w)\n}\n")
        row = {}
        for device in ("cpu", "cuda"):
            _timed_solve(tmp / "lasso.reg", tol=1e-8, device=device)          # warm-up
            wall, r = min((_timed_solve(tmp / "lasso.reg", tol=1e-8, device=device) for _ in range(3)),
                          key=lambda t: t[0])
            f = bench_lasso.objective(X, y, alpha, r.variables["w"])
            row[device] = (wall, f)
            print(f"   {n} x {p} {device:<5} {wall:8.3f} s  {r.status}, {r.iterations} it, "
                  f"solver {r.solver}, f = {f:.12g}")
        (tc, fc), (tg, fg) = row["cpu"], row["cuda"]
        print(f"   {n} x {p}: CPU / CUDA = {tc / tg:.1f}x; objectives differ by {abs(fc - fg) / abs(fc):.1e} (rel)")


def bench_ot_devices(sizes: list[int], cpu_max: int) -> None:
    print("2. class OT (restarted PDHG), wall s")
    for n in sizes:
        d = ot.class_ot_data(n, max(3, n // 100))
        tmp = Path(tempfile.mkdtemp(prefix=f"bench_gpu_ot_{n}_"))
        np.savez(tmp / "ot.npz", **d)
        (tmp / "class_ot.reg").write_text(ot.SPEC)
        spec = tmp / "class_ot.reg"
        if n == sizes[0]:
            _timed_solve(spec, tol=1e-2, device="cuda")                          # warm-up
        _, ref = _timed_solve(spec, tol=1e-7, device="cuda")
        f_ref = ot.objective(d, ref.variables["P"], 0.01)
        runs = [("cuda", "float64"), ("cuda", "float32")] + ([("cpu", "float64")] if n <= cpu_max else [])
        times = {}
        for device, dtype in runs:
            wall, r = _timed_solve(spec, tol=1e-6, device=device, dtype=dtype)
            f = ot.objective(d, r.variables["P"].astype(np.float64), 0.01)
            times[(device, dtype)] = wall
            print(f"   n = {n:5d} {device:<5} {dtype:<8} {wall:8.2f} s  {r.status}, {r.iterations} it, "
                  f"gap to f_ref {abs(f - f_ref) / abs(f_ref):.1e}")
        if ("cpu", "float64") in times:
            print(f"   n = {n}: CPU / CUDA (float64) = {times[('cpu', 'float64')] / times[('cuda', 'float64')]:.1f}x")


def bench_train_step(batch: int, blocks: int) -> None:
    import bench_train_spectral as spectral_bench

    torch.manual_seed(0)
    base = spectral_bench.ResNet18().cuda()
    x = torch.randn(batch, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    variants = {"plain": None,
                "nuclear every 10 steps": spectral_bench.SPEC.format(gate=" every 10 steps"),
                "nuclear every step": spectral_bench.SPEC.format(gate="")}
    runs = {name: spectral_bench._runner(copy.deepcopy(base), spec, x, y) for name, spec in variants.items()}

    def block(steps) -> float:
        _sync()
        t0 = time.perf_counter()
        steps(10)
        _sync()
        return (time.perf_counter() - t0) / 10

    for steps in runs.values():
        block(steps)                                                         # warm-up
    times = {name: [] for name in runs}
    for _ in range(blocks):
        for name, steps in runs.items():
            times[name].append(block(steps))
    plain = statistics.median(times["plain"])
    print(f"3. ResNet-18 step on CUDA, batch {batch}, medians of {blocks} blocks of 10 steps (wall s per step)")
    for name in runs:
        t = statistics.median(times[name])
        print(f"   {name:>24} {t * 1e3:8.2f} ms  ratio {t / plain:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lasso", nargs="+", default=["2000x2000", "20000x5000"])
    ap.add_argument("--ot", type=int, nargs="+", default=[500, 1000])
    ap.add_argument("--ot-cpu-max", type=int, default=500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--skip-lasso", action="store_true")
    ap.add_argument("--skip-ot", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: CUDA is not available on this machine; nothing to measure")
        return
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {os.cpu_count()} CPU cores "
          f"({torch.get_num_threads()} torch threads)")
    if not args.skip_lasso:
        bench_lasso_devices(args.lasso)
    if not args.skip_ot:
        bench_ot_devices(args.ot, args.ot_cpu_max)
    if not args.skip_train:
        bench_train_step(args.batch, args.blocks)


if __name__ == "__main__":
    main()
