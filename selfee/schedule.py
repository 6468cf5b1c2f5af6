"""Schedules as pure functions of the step: the one-cycle learning rate (and momentum), lambda.

``one_cycle`` reproduces ``torch.optim.lr_scheduler.OneCycleLR`` (cosine annealing, two phases,
its default momentum cycle 0.95 -> 0.85 -> 0.95), which the original Selfee used; a test checks
it against PyTorch step by step.
"""

from __future__ import annotations

import math

from selfee.config import OptimConfig


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def one_cycle(
    step: int,
    total_steps: int,
    max_lr: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> tuple[float, float]:
    """(learning rate, momentum) after ``step`` scheduler steps (0 = before the first update)."""
    initial = max_lr / div_factor
    final = initial / final_div_factor
    peak = float(pct_start * total_steps) - 1
    last = total_steps - 1
    step = min(max(step, 0), last)
    if step <= peak:
        pct = step / peak if peak > 0 else 1.0
        return _cos(initial, max_lr, pct), _cos(max_momentum, base_momentum, pct)
    pct = (step - peak) / (last - peak)
    return _cos(max_lr, final, pct), _cos(base_momentum, max_momentum, pct)


def optim_schedule(cfg: OptimConfig, step: int) -> tuple[float, float]:
    """The recipe's (lr, momentum) at ``step``; momentum is constant without ``cycle_momentum``."""
    lr, mom = one_cycle(step, cfg.steps, cfg.lr, cfg.warmup_fraction, cfg.div_factor, cfg.final_div_factor)
    return lr, (mom if cfg.cycle_momentum else cfg.momentum)
