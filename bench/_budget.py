"""Run a baseline solve in a child process and abandon it past a time budget (a conic solver on
a large instance can run for hours; the benchmark reports that it ran out of budget instead)."""
from __future__ import annotations

import multiprocessing as mp
import time
from typing import Callable


def run_with_budget(target: Callable, args: tuple, budget: float) -> dict:
    """``target(*args, queue)`` in a forked child; its first ``queue.put`` (a dict) is returned,
    or ``{"status": "exceeded the ... budget ..."}`` when nothing arrives within ``budget`` s."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    t0 = time.perf_counter()
    proc.start()
    try:
        out = queue.get(timeout=budget)
    except Exception:  # queue.Empty: over budget
        out = {"status": f"exceeded the {budget:.0f} s budget (abandoned after {time.perf_counter() - t0:.0f} s)"}
    proc.join(timeout=5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return out
