"""Cost of the per-step finite check (issue 9 item 2) in a regularized training step.

The same step (forward, loss with the spec's penalties, backward, optimizer.step() with the prox
steps run by the optimizer hook) on two copies of the spec's model, attached with the finite check
on and off (the baseline). Blocks of 10 steps alternate so that background load hits both alike;
the ratio is the median of the per-block ratios. Times are the CPU time of the (single) torch
thread.

    python bench/bench_train_finite_check.py [--spec specs/train_group_channels.reg] [--rounds 30]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def measure(spec_path: str, rounds: int, block: int = 10) -> dict:
    import regspec
    from regspec.backends.torch.train.assemble import complete_model_kwargs, make_data
    from regspec.backends.torch.train.models import build_model
    from regspec.backends.torch.train.optim import build_optimizer
    from regspec.train_api import plan

    p = plan(spec_path)
    data = make_data(p)
    kwargs, _ = complete_model_kwargs(p, data)
    torch.manual_seed(p.seed)
    base = build_model(p.model.name, **kwargs)
    batches = list(data.epoch_loader(0))

    def attached(check: bool):
        model = copy.deepcopy(base)
        opt = build_optimizer(p.optimizer.name, model.parameters(), **p.optimizer.kwargs)
        reg = regspec.attach(spec_path, model, opt, steps_per_epoch=len(batches), epochs=p.total_epochs)
        reg.check_finite = check
        return reg, opt

    def steps(reg, opt, n: int) -> None:
        for i in range(n):
            x, y = batches[i % len(batches)]
            loss = reg.loss(reg.module(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    on, off = attached(True), attached(False)
    steps(*on, block)
    steps(*off, block)
    t_on, t_off, ratios = [], [], []
    for _ in range(rounds):
        t0 = time.thread_time()
        steps(*off, block)
        t1 = time.thread_time()
        steps(*on, block)
        t2 = time.thread_time()
        t_off.append((t1 - t0) / block)
        t_on.append((t2 - t1) / block)
        ratios.append((t2 - t1) / (t1 - t0))
    return {"spec": spec_path, "unchecked_ms": statistics.median(t_off) * 1e3,
            "checked_ms": statistics.median(t_on) * 1e3, "ratio": statistics.median(ratios),
            "prox_calls": len(on[0].engine.buckets)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", action="append", help="training spec(s) (default: three bundled ones)")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    specs = args.spec or [str(ROOT / "specs" / n) for n in
                          ("train_group_channels.reg", "train_nuclear.reg", "train_prosparse.reg")]
    for spec in specs:
        r = measure(spec, args.rounds)
        print(f"{Path(r['spec']).name}: step {r['unchecked_ms']:.3f} ms without the check (baseline), "
              f"{r['checked_ms']:.3f} ms with it; ratio {r['ratio']:.3f} (median of blocks); "
              f"{r['prox_calls']} fused prox calls per step")


if __name__ == "__main__":
    main()
