"""The one-cycle schedule matches torch.optim.lr_scheduler.OneCycleLR step by step."""

import pytest
import torch

from selfee.config import OptimConfig
from selfee.schedule import one_cycle, optim_schedule


@pytest.mark.parametrize("total, pct", [(200, 0.025), (1000, 0.3), (57, 0.1)])
def test_matches_pytorch_one_cycle(total, pct):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=total, pct_start=pct)
    for step in range(total):
        lr, mom = one_cycle(step, total, 0.2, pct)
        assert lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        assert mom == pytest.approx(opt.param_groups[0]["momentum"], rel=1e-12)
        opt.step()
        if step < total - 1:
            sched.step()


def test_recipe_values():
    cfg = OptimConfig(batch_size=256, base_lr=0.05, steps=20000)
    lr0, _ = optim_schedule(cfg, 0)
    peak, _ = optim_schedule(cfg, 499)
    assert lr0 == pytest.approx(0.05 / 25)
    assert peak == pytest.approx(0.05)
    _, mom = optim_schedule(OptimConfig(cycle_momentum=False), 10)
    assert mom == 0.9
