"""Schedules against the closed forms of CATALOGUE §5, and gates."""
from __future__ import annotations

import math

import pytest

from regspec.backends.torch.train import schedules as S
from regspec.diagnostics import RegspecError

TS = [-1.0, 0.0, 0.5, 1.0, 2.5, 3.3, 5.0, 7.9, 10.0, 12.0]


def clamp_p(t, start, end):
    return min(1.0, max(0.0, (t - start) / (end - start)))


@pytest.mark.parametrize("t", TS)
def test_ramps_closed_forms(t):
    a, b, s, e = 2.0, 0.5, 1.0, 9.0
    p = clamp_p(t, s, e)
    assert S.constant(a)(t) == a
    assert S.linear(a, b, s, e)(t) == pytest.approx(a + (b - a) * p, abs=1e-12)
    assert S.cosine(a, b, s, e)(t) == pytest.approx(b + (a - b) * (1 + math.cos(math.pi * p)) / 2, abs=1e-12)
    assert S.cubic(a, b, s, e)(t) == pytest.approx(b + (a - b) * (1 - p) ** 3, abs=1e-12)
    assert S.exp(a, b, s, e)(t) == pytest.approx(a * (b / a) ** p, abs=1e-12)
    assert S.step(a, [2, 5, 8], gamma=0.5)(t) == pytest.approx(a * 0.5 ** sum(m <= t for m in [2, 5, 8]))
    assert S.window(2, 8)(t) == (1.0 if 2 <= t < 8 else 0.0)


def test_end_defaults_to_total_and_every_rounds_down():
    c = S.build_schedule("cosine", 1.0, 0.0, total=10)
    assert c(0) == 1.0 and c(10) == pytest.approx(0.0) and c(5) == pytest.approx(0.5)
    with pytest.raises(RegspecError, match="total"):
        S.linear(0, 1)
    held = S.linear(0.0, 1.0, 0, 10, every=2)
    assert held(3.9) == pytest.approx(0.2) and held(4.0) == pytest.approx(0.4)
    assert 0.3 / 0.1 < 3  # float: without slack, t = 0.3 would round down to 0.2
    assert S.linear(0.0, 1.0, 0, 1, every=0.1)(0.3) == pytest.approx(0.3)


def _sine_ref(t, levels, start, end):
    st = len(levels) - 1
    if t <= start:
        return levels[0]
    if t >= end:
        return levels[-1]
    width = (end - start) / st
    i = int((t - start) // width) + 1
    p = (t - start - (i - 1) * width) / width
    return levels[i - 1] + (levels[i] - levels[i - 1]) * math.sin(math.pi / 2 * p)


@pytest.mark.parametrize("t", [0.0, 1.0, 2.5, 5.0, 6.25, 9.99, 10.0, 19.0, 20.0, 25.0])
def test_sine_stages_closed_form(t):
    sch = S.sine_stages(0.0, 1e-4, stages=4, total=20)
    levels = [0.0, 2.5e-5, 5e-5, 7.5e-5, 1e-4]  # equally spaced, first stage starts at a
    assert sch(t) == pytest.approx(_sine_ref(t, levels, 0.0, 20.0), rel=1e-12, abs=1e-18)


def test_sine_stages_boundaries_monotone_and_values():
    sch = S.sine_stages(0.0, 1.0, stages=4, start=0, end=8)
    for i in range(5):  # λ_i reached exactly at T_i
        assert sch(2.0 * i) == pytest.approx(i / 4)
    assert sch(1.0) == pytest.approx(0.25 * math.sin(math.pi / 4))
    grid = [k / 100 for k in range(0, 801)]
    vals = [sch(t) for t in grid]
    assert all(b >= a - 1e-15 for a, b in zip(vals, vals[1:]))
    listed = S.sine_stages(stages=2, values=[0.0, 5.0, 6.0], start=0, end=4)
    assert listed(2.0) == pytest.approx(5.0) and listed(3.0) == pytest.approx(5.0 + math.sin(math.pi / 4))
    with pytest.raises(RegspecError, match="stages \\+ 1"):
        S.sine_stages(stages=3, values=[0, 1], end=4)


def test_warmup_and_arithmetic():
    w = S.warmup(2.0, S.cosine(1.0, 0.0, 2.0, 10.0))
    assert w(0) == 0.0 and w(1) == pytest.approx(0.5) and w(2) == pytest.approx(1.0)
    assert w(6) == pytest.approx(0.5)
    combo = 1e-3 * S.linear(0.0, 1.0, 0, 4) + 1.0
    assert combo(2) == pytest.approx(1.0005)


def test_build_schedule_errors():
    with pytest.raises(RegspecError) as e:
        S.build_schedule("cosin", 1, 0, total=3)
    assert "did you mean `cosine`" in str(e.value)
    with pytest.raises(RegspecError) as e:
        S.build_schedule("linear", 0, 1, ende=3)
    assert "did you mean `end`" in str(e.value)
    with pytest.raises(RegspecError, match="before start"):
        S.build_schedule("linear", 0, 1, 5, 2)
    assert isinstance(S.build_schedule("window", 0, 3), S.Window)


def test_gate():
    g = S.Gate(every=10)
    assert [s for s in range(1, 41) if g.active(s, 0)] == [10, 20, 30, 40]
    f = S.Gate(from_epoch=5)
    assert not f.active(1, 4) and f.active(1, 5) and f.active(1, 9.5)
    u = S.Gate(every=2, from_epoch=1, until_epoch=3)
    assert u.active(4, 1) and not u.active(5, 1) and not u.active(4, 0) and not u.active(4, 3)
    assert S.Gate().active(7, 100)
    with pytest.raises(RegspecError):
        S.Gate(from_epoch=3, until_epoch=3)
    with pytest.raises(RegspecError):
        S.Gate(every=0)
