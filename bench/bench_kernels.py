"""Benchmark: fused multi-tensor prox kernels vs the per-tensor loop vs one AdamW(foreach) step.

Builds many weight tensors shaped like an MLP/CNN's (conv filters, linear weights, biases), then times,
in the same run and on the same tensors:

* ``apply_prox_group`` (fused: torch._foreach_* / stacked batched kernels) for l1, group_l2 (rows), l2sq;
* ``apply_prox_loop`` (one kernel call per tensor from Python) for the same;
* one ``torch.optim.AdamW(..., foreach=True).step()``, the cost a post-step prox is added to.

Each measurement: warmup calls, then ``--repeat`` rounds that time every call once (interleaved,
perf_counter, CUDA synchronized), reporting the median per call. Usage::

    python bench/bench_kernels.py --device cpu --n-tensors 200 --repeat 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from regspec.backends.torch.fused import apply_prox_group, apply_prox_loop

# a repeating unit of parameter shapes: conv stages (weights + biases + norm scales) and an MLP head
SHAPE_CYCLE: list[tuple[int, ...]] = [
    (32, 16, 3, 3), (32,), (32,),
    (64, 32, 3, 3), (64,), (64,),
    (64, 64, 3, 3), (64,), (64,),
    (128, 64, 3, 3), (128,), (128,),
    (256, 512), (256,),
    (128, 256), (128,),
    (64, 128), (64,),
    (10, 64), (10,),
]  # fmt: skip


def build_tensors(count: int, device: torch.device, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [SHAPE_CYCLE[i % len(SHAPE_CYCLE)] for i in range(count)]
    return [(torch.randn(shape, generator=generator, dtype=dtype) * 0.05).to(device) for shape in shapes]


def median_seconds(
    calls: dict[str, Callable[[], None]], device: torch.device, repeat: int, warmup: int = 3
) -> dict[str, float]:
    """Median wall time of each call. Calls are interleaved (one of each per round), so a machine whose
    load drifts during the run (other jobs, frequency changes) affects all of them alike."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for call in calls.values():
            call()
    sync()
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(repeat):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            sync()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(samples) for label, samples in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-tensors", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    tensors = build_tensors(args.n_tensors, device, dtype, args.seed)
    numel = sum(t.numel() for t in tensors)
    distinct_shapes = len({tuple(t.shape) for t in tensors})

    # tiny steps: the values hardly move across repeats, and dense kernels cost the same for any values
    step = 1e-4
    kernels = {
        "l1": ("l1", dict(lam=1.0)),
        "group_l2 rows": ("group_l2", dict(lam=1.0, groups="rows")),
        "l2sq": ("l2sq", dict(lam=0.1)),
    }

    parameters = [torch.nn.Parameter(t.clone()) for t in tensors]
    for p in parameters:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.01, foreach=True)

    calls: dict[str, Callable[[], None]] = {"AdamW": optimizer.step}
    for label, (name, hyper) in kernels.items():
        calls[f"{label} fused"] = partial(apply_prox_group, name, [t.clone() for t in tensors], step, **hyper)
        calls[f"{label} loop"] = partial(apply_prox_loop, name, [t.clone() for t in tensors], step, **hyper)
    seconds = median_seconds(calls, device, args.repeat)
    adamw = seconds["AdamW"]

    print(
        f"device={device} dtype={args.dtype} tensors={len(tensors)} ({distinct_shapes} distinct shapes) "
        f"params={numel / 1e6:.2f}M threads={torch.get_num_threads()} "
        f"repeat={args.repeat} (median, interleaved)"
    )
    columns = ("fused ms", 9), ("loop ms", 9), ("loop/fused", 11), ("fused/AdamW", 12), ("loop/AdamW", 11)
    print(f"{'kernel':<15} " + " ".join(f"{title:>{width}}" for title, width in columns))
    for label in kernels:
        fused, loop = seconds[f"{label} fused"], seconds[f"{label} loop"]
        ratios = f"{loop / fused:10.2f}x {fused / adamw:11.2f}x {loop / adamw:10.2f}x"
        print(f"{label:<15} {fused * 1e3:9.3f} {loop * 1e3:9.3f} {ratios}")
    print(f"{'AdamW foreach':<15} {adamw * 1e3:9.3f}")


if __name__ == "__main__":
    main()
