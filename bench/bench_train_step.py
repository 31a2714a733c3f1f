"""Training-step cost of a spec's regularizers, and the fused prox step vs a per-parameter loop.

1. step ratio: one training step (forward, loss, backward, optimizer.step) of the spec's model
   with every regularizer attached (rewritten and tapped fx graph, in-graph penalties, fused prox
   steps and gated projections after the step) vs the same plain step on the same model
   (flush-denormal on, as in generated trainers).
   Target for the CNN on digits (specs/train_group_channels.reg): <= 1.15x.
2. prox step: ``ProxEngine.after_step()`` (one fused call per bucket) vs ``apply_loop()`` (one
   kernel call per tensor), on the spec's groups and on 24-layer MLPs (width 32 and 128) with
   l1, group, weight-decay and box terms on every layer. On CPU fusion saves dispatch overhead,
   so it matters most for many small tensors; on CUDA it also saves kernel launches.

    python bench/bench_train_step.py [--spec specs/train_group_channels.reg] [--steps 200] [--threads 1] [--json]

Batches are prefetched (data loading is not timed); times are the CPU time of the (single) torch
thread, medians over repeats; ``--wall`` uses wall-clock time instead.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
# CPU time of this thread (torch runs single-threaded here, on the calling thread): unlike wall time
# it does not count the time other processes hold the core, which dominates on a shared machine
_clock = time.thread_time


def _median_time(fn, steps: int, repeats: int) -> float:
    fn(5)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = _clock()
        fn(steps)
        times.append((_clock() - t0) / steps)
    return statistics.median(times)


def step_ratio(spec_path: str, steps: int, repeats: int) -> dict:
    import regspec
    from regspec.backends.torch.train.assemble import complete_model_kwargs, make_data
    from regspec.backends.torch.train.losses import build_loss
    from regspec.backends.torch.train.models import build_model
    from regspec.backends.torch.train.optim import build_optimizer
    from regspec.train_api import plan

    p = plan(spec_path)
    data = make_data(p)
    kwargs, _ = complete_model_kwargs(p, data)
    torch.manual_seed(p.seed)
    base = build_model(p.model.name, **kwargs)
    batches = list(data.epoch_loader(0))
    loss_fn = build_loss(p.loss if p.loss != "auto" else "cross_entropy")

    plain = copy.deepcopy(base)
    opt_plain = build_optimizer(p.optimizer.name, plain.parameters(), **p.optimizer.kwargs)

    def run_plain(n: int) -> None:
        for i in range(n):
            x, y = batches[i % len(batches)]
            loss = loss_fn(plain(x), y)
            opt_plain.zero_grad(set_to_none=True)
            loss.backward()
            opt_plain.step()

    model = copy.deepcopy(base)
    opt = build_optimizer(p.optimizer.name, model.parameters(), **p.optimizer.kwargs)
    reg = regspec.attach(spec_path, model, opt, steps_per_epoch=len(batches), epochs=p.total_epochs)
    net = reg.module

    def run_reg(n: int) -> None:
        for i in range(n):
            x, y = batches[i % len(batches)]
            loss = reg.loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            reg.after_step()

    # interleave short blocks so that background load hits both alike; the ratio is the median of
    # the per-round ratios, the times the medians of the per-round times
    run_plain(10)
    run_reg(10)
    t_plain, t_reg, ratios = [], [], []
    block = 10
    for _ in range(max(1, steps * repeats // block)):
        t0 = _clock()
        run_plain(block)
        t1 = _clock()
        run_reg(block)
        t2 = _clock()
        t_plain.append((t1 - t0) / block)
        t_reg.append((t2 - t1) / block)
        ratios.append((t2 - t1) / (t1 - t0))
    tp, tr = statistics.median(t_plain), statistics.median(t_reg)
    # the prox part alone, fused vs per-tensor loop, on the spec's groups
    t_fused = _median_time(lambda n: [reg.engine.after_step() for _ in range(n)], steps, repeats)
    t_loop = _median_time(lambda n: [reg.engine.apply_loop() for _ in range(n)], steps, repeats)
    return {"spec": spec_path, "model": type(base).__name__, "batch": data.batch, "plain_ms": tp * 1e3,
            "regularized_ms": tr * 1e3, "ratio": statistics.median(ratios),
            "ratio_of_min": min(t_reg) / min(t_plain), "prox_fused_ms": t_fused * 1e3,
            "prox_loop_ms": t_loop * 1e3, "buckets": len(reg.engine.buckets),
            "tensors": sum(len(b.params) for b in reg.engine.buckets)}


def many_tensors(steps: int, repeats: int, layers: int = 24, width: int = 128) -> dict:
    from regspec.backends.torch.train.proxstep import ProxEngine, ProxGroup

    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    weights = [f"{i}.weight" for i in range(layers)]
    biases = [f"{i}.bias" for i in range(layers)]
    groups = [ProxGroup("l1", weights, 1e-4), ProxGroup("group_l2", weights, 1e-4, {"groups": "rows"}),
              ProxGroup("l2sq", biases, 1e-2), ProxGroup("box", biases, hyper={"lo": -1.0, "hi": 1.0})]
    eng = ProxEngine(net, opt, groups)
    opt.step()
    t_fused = _median_time(lambda n: [eng.after_step() for _ in range(n)], steps, repeats)
    t_loop = _median_time(lambda n: [eng.apply_loop() for _ in range(n)], steps, repeats)
    return {"tensors": 4 * layers, "layers": layers, "width": width, "fused_ms": t_fused * 1e3,
            "loop_ms": t_loop * 1e3, "speedup": t_loop / t_fused}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "train_group_channels.reg"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--wall", action="store_true", help="time with wall-clock time instead of thread CPU time")
    args = ap.parse_args()
    global _clock
    if args.wall:
        _clock = time.perf_counter
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the generated trainers do (subnormals are slow on CPUs)
    res = {"threads": args.threads, "torch": torch.__version__,
           "step": step_ratio(args.spec, args.steps, args.repeats),
           "many_tensors": [many_tensors(args.steps, args.repeats, width=w) for w in (32, 128)]}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    s = res["step"]
    print(f"torch {res['torch']}, {args.threads} thread(s), CPU, {'wall' if args.wall else 'thread CPU'} time")
    print(f"training step, {s['model']} on {Path(s['spec']).name} (batch {s['batch']}):")
    print(f"  plain {s['plain_ms']:.3f} ms   regularized {s['regularized_ms']:.3f} ms   ratio {s['ratio']:.3f}x"
          f" (median of paired blocks; of the fastest blocks: {s['ratio_of_min']:.3f}x)   target <= 1.15x")
    print(f"  prox step ({s['tensors']} tensors, {s['buckets']} fused calls): fused {s['prox_fused_ms']:.3f} ms"
          f"   per-tensor loop {s['prox_loop_ms']:.3f} ms")
    for m in res["many_tensors"]:
        print(f"prox step, {m['layers']}-layer MLP (width {m['width']}, {m['tensors']} tensors, 4 terms):")
        print(f"  fused {m['fused_ms']:.3f} ms   per-tensor loop {m['loop_ms']:.3f} ms   speedup {m['speedup']:.2f}x")


if __name__ == "__main__":
    main()
