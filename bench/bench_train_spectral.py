"""Spectral proxes in training: the full-SVD kernel vs the certified Gram path, and a ResNet-18 step.

1. kernels: spectral-ball projection and nuclear prox on a ResNet-18 conv weight viewed as a matrix
   (layer4: 512 x 4608) and a smaller one (layer3: 256 x 2304), Kaiming-initialised. Baseline: the
   full-SVD kernel (``svd_map``, what every call cost before); ours: ``proj_spectral_ball`` /
   ``prox_nuclear`` (backends/torch/spectral.py). Cases: no singular value above the radius, three
   above, half above; the "clustered" case is the training regime of a projection every step (the
   weight was projected at the last step, then an SGD-sized perturbation moved it).
   The error columns are each result's relative Frobenius distance to the same map computed from
   a float64 SVD (the float32 full-SVD kernel's own error is the tolerance to meet).
2. step: ResNet-18 for 3x32x32 inputs (CIFAR stem; defined here, torchvision is not importable
   beside the CPU torch), SGD(lr 0.1, momentum 0.9), cross-entropy on random data. Regularized:
   group_l2 on every conv (channels), l1 on the last block's activation, nuclear prox on
   layer4.1.conv2 every 10 steps (the issue's target), every step, and every step with the full
   SVD (the fast path switched off), attached with ``regspec.train_api.attach``, vs the plain
   step on an identical model. Times are process CPU time (robust to other processes on a shared
   machine), medians over blocks of 10 steps (one gated prox per block), blocks interleaved.

    python bench/bench_train_spectral.py [--batch 64] [--blocks 2] [--threads 1] [--skip-step]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from regspec.backends.torch.projections import proj_spectral_ball, svd_map
from regspec.backends.torch.prox import prox_nuclear

_clock = time.process_time


def _timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = _clock()
        out = fn()
        times.append(_clock() - t0)
    return statistics.median(times), out


def _conv_matrix(out_ch: int, in_ch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = torch.empty(out_ch, in_ch, 3, 3)
    nn.init.kaiming_normal_(w, generator=gen)
    return w.reshape(out_ch, -1)


def _cases(x: torch.Tensor) -> list[tuple[str, str, float, torch.Tensor]]:
    s = torch.linalg.svdvals(x)
    m = s.numel()
    top3 = float(s[2] + s[3]) / 2
    projected = svd_map(x, lambda sigma: sigma.clamp_max(top3))
    nudged = projected + 1e-3 * float(s[0]) / m ** 0.5 * torch.randn_like(x, dtype=x.dtype)
    return [
        ("ball", "none above", float(s[0]) * 1.01, x),
        ("ball", "3 above", top3, x),
        ("ball", "half above", float(s[m // 2]), x),
        ("ball", "clustered", top3, nudged),
        ("nuclear", "rank 3 left", float(s[3]), x),
        ("nuclear", "half left", float(s[m // 2]), x),
    ]


def bench_kernels(repeats: int) -> None:
    print("1. spectral kernels: full SVD (svd_map) vs ours, process CPU s per call (median)")
    print(f"   {'matrix':>10} {'kernel':>8} {'case':>12} {'full SVD':>9} {'ours':>8} {'ratio':>7} "
          f"{'err SVD':>9} {'err ours':>9}")
    for name, (out_ch, in_ch) in {"512x4608": (512, 512), "256x2304": (256, 256)}.items():
        x = _conv_matrix(out_ch, in_ch, seed=out_ch)
        for kernel, case, threshold, mat in _cases(x):
            if kernel == "ball":
                sv_map = lambda sigma: sigma.clamp_max(threshold)  # noqa: E731
                ours = lambda: proj_spectral_ball(mat, radius=threshold)  # noqa: E731
            else:
                sv_map = lambda sigma: (sigma - threshold).clamp_min(0)  # noqa: E731
                ours = lambda: prox_nuclear(mat, 1.0, lam=threshold)  # noqa: E731
            t_full, full = _timed(lambda: svd_map(mat, sv_map), repeats)
            t_ours, out = _timed(ours, repeats)
            ref = svd_map(mat.double(), sv_map)
            err_full, err_ours = (float((r.double() - ref).norm() / ref.norm().clamp_min(1e-30)) for r in (full, out))
            print(f"   {name:>10} {kernel:>8} {case:>12} {t_full:9.3f} {t_ours:8.3f} {t_full / t_ours:6.1f}x "
                  f"{err_full:9.1e} {err_ours:9.1e}")


# ---------------------------------------------------------------- ResNet-18 (3x32x32)
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        widths, cin = [64, 128, 256, 512], 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.pool(out), 1))


SPEC = """
train r18 {{
  loss cross_entropy
  regularize group_l2(param(type = Conv2d), groups = channels) * 1e-5
  regularize l1(act("layer4.1.relu2")) * 1e-6
  regularize nuclear(param("layer4.1.conv2.weight")) * 1e-3 via prox{gate}
}}
"""
LR = 0.1


def _variants() -> dict[str, tuple[str, bool]]:
    """name -> (gate on the nuclear prox, fast spectral path on)."""
    return {"nuclear every 10 steps": (" every 10 steps", True),
            "nuclear every step": ("", True),
            "nuclear every step, full SVD": ("", False)}


def _runner(model: nn.Module, spec: str | None, x: torch.Tensor, y: torch.Tensor):
    from regspec.train_api import attach

    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    reg = attach(spec, model, opt) if spec is not None else None
    module = reg.module if reg is not None else model
    loss = reg.loss if reg is not None else loss_fn

    def steps(n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss(module(x), y).backward()
            opt.step()        # with a spec, its hooks run the prox steps (gated ones at steps 10, 20, ...)

    return steps


def _block_time(steps, fast: bool) -> float:
    from regspec.backends.torch import spectral

    saved = spectral.FAST_MIN_SIDE
    spectral.FAST_MIN_SIDE = saved if fast else 10 ** 9     # off: every call takes the full SVD
    try:
        t0 = _clock()
        steps(10)
        return (_clock() - t0) / 10
    finally:
        spectral.FAST_MIN_SIDE = saved


def bench_step(batch: int, blocks: int) -> None:
    torch.manual_seed(0)
    base = ResNet18()
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    runs = {"plain": (_runner(copy.deepcopy(base), None, x, y), True)}
    for name, (gate, fast) in _variants().items():
        runs[name] = (_runner(copy.deepcopy(base), SPEC.format(gate=gate), x, y), fast)
    for steps, fast in runs.values():
        _block_time(steps, fast)      # warm-up block (10 steps: the gated prox runs once)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(blocks):
        for name, (steps, fast) in runs.items():
            times[name].append(_block_time(steps, fast))
    plain = statistics.median(times["plain"])
    print(f"2. ResNet-18 step, batch {batch}, {torch.get_num_threads()} thread(s), medians of {blocks} blocks "
          f"of 10 steps (process CPU s per step); group_l2 on all convs, l1 on layer4.1.relu2")
    print(f"   {'plain':>30} {plain:7.3f} s")
    for name in _variants():
        t = statistics.median(times[name])
        print(f"   {name:>30} {t:7.3f} s  ratio {t / plain:.2f}x")
    base_w = base.layer4[1].conv2.weight.detach().reshape(512, -1)
    tau = LR * 1e-3
    t_full, _ = _timed(lambda: svd_map(base_w, lambda sigma: (sigma - tau).clamp_min(0)), 1)
    t_ours, _ = _timed(lambda: prox_nuclear(base_w, 1.0, lam=tau), 1)
    print(f"   the nuclear prox alone on layer4.1.conv2 (tau = {tau:g}): full SVD {t_full:.3f} s, "
          f"ours {t_ours:.3f} s ({t_full / t_ours:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-step", action="store_true")
    ap.add_argument("--skip-kernels", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_kernels:
        bench_kernels(args.repeats)
    if not args.skip_step:
        bench_step(args.batch, args.blocks)


if __name__ == "__main__":
    main()
