"""Batch-size tuning: the fastest size within the memory cap, measured at the start of a run."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from conftest import make_cohort, make_config
from xaudit.attribution.engine import tune_max_batch
from xaudit.config import load_config
from xaudit.workflows.audit import RunOptions, run_audit


class Noisy(nn.Module):
    """``Paced`` with a fixed cost, where chosen calls (by number) take ``slow`` times longer:
    another job on the machine stealing the CPU for a moment."""

    def __init__(self, fixed: float, slow_calls: set[int], slow: float = 5.0):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.fixed, self.slow_calls, self.slow = fixed, slow_calls, slow
        self.now, self.calls = 0.0, 0

    def clock(self) -> float:
        return self.now

    def forward(self, x):
        self.calls += 1
        self.now += self.fixed * (self.slow if self.calls in self.slow_calls else 1.0)
        return torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], 1) * self.weight


class Paced(nn.Module):
    """A model whose forward takes ``fixed + per_sample * b ** power`` simulated seconds for a
    batch of b: it advances its own clock (``self.clock``, passed to the tuner) instead of
    sleeping, so the tests do not depend on how busy the machine is."""

    def __init__(self, fixed: float, per_sample: float, power: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.fixed, self.per_sample, self.power = fixed, per_sample, power
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def forward(self, x):
        self.now += self.fixed + self.per_sample * x.shape[0] ** self.power
        return torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], 1) * self.weight


def tune(model: Paced, **kwargs):
    return tune_max_batch(model, SAMPLE, clock=model.clock, **kwargs)


SAMPLE = torch.zeros(1, 1, 4, 4, 4)


def test_a_fixed_cost_per_pass_makes_the_biggest_batch_fastest():
    best, rates = tune(Paced(0.02, 0.001, 1), cap=8)
    assert best == 8 and sorted(rates) == [1, 2, 4, 8]


def test_a_cost_that_grows_faster_than_the_batch_stops_the_search_early():
    best, rates = tune(Paced(0.0, 0.004, 2), cap=16)  # rate 250 / b: 1 is fastest
    assert best == 1
    assert max(rates) == 4  # batch 2 and 4 ran at half and a quarter of the rate: no bigger size was tried


def test_one_slow_timing_cannot_derail_the_choice():
    # calls: 1 warm-up, 2-4 batch 1, 5-7 batch 2, 8-10 batch 4, 11-13 batch 8
    for slow_calls in ({5}, {8}, {5, 9}, {11}):
        model = Noisy(0.1, slow_calls)
        best, rates = tune_max_batch(model, SAMPLE, cap=8, clock=model.clock)
        assert best == 8 and sorted(rates) == [1, 2, 4, 8], (slow_calls, rates)


def test_a_single_timing_per_size_would_have_been_derailed():
    # the same noise with one timing per size and no patience: the old tuner stopped at batch 2
    model = Noisy(0.1, {3})
    best, rates = tune_max_batch(model, SAMPLE, cap=8, clock=model.clock, repeats=1, patience=1)
    assert best == 1 and sorted(rates) == [1, 2]


def test_the_time_budget_and_the_cap_bound_the_search():
    best, rates = tune(Paced(0.1, 0.0, 1), cap=64, budget_s=1.0)
    assert sorted(rates) == [1, 2] and best == 2  # warm-up 0.1 s, 3 x 0.1 s per size; a third size would overrun
    assert tune(Paced(0.0, 0.0, 1), cap=1) == (1, {})
    best, rates = tune(Paced(0.01, 0.0, 1), cap=6)
    assert sorted(rates) == [1, 2, 4, 6] and best == 6


@pytest.mark.slow
def test_a_run_tunes_the_batch_unless_the_config_sets_it(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=4)
    tuned = run_audit(load_config(make_config(tmp_path, manifest)), RunOptions(output=tmp_path / "tuned"))
    provenance = yaml.safe_load((tuned.run_dir / "config.resolved.yaml").read_text())["provenance"]
    assert provenance["batch_rates"] and provenance["max_batch"] in provenance["batch_rates"]
    assert tuned.audit["run"]["timings_s"]["batch_tuning"] > 0

    fixed = run_audit(load_config(make_config(tmp_path, manifest, attribution__max_batch=3)),
                      RunOptions(output=tmp_path / "fixed"))
    provenance = yaml.safe_load((fixed.run_dir / "config.resolved.yaml").read_text())["provenance"]
    assert provenance["max_batch"] == 3 and provenance["batch_rates"] is None
    assert "batch_tuning" not in fixed.audit["run"]["timings_s"]


def test_a_model_the_tuner_cannot_time_keeps_the_memory_cap(caplog):
    from types import SimpleNamespace

    from xaudit.stages.subject_pass import tune_batch

    class Detached(nn.Module):  # no gradient reaches the input
        def forward(self, x):
            return torch.stack([x.flatten(1).sum(1), x.flatten(1).mean(1)], 1).detach()

    setup = SimpleNamespace(model=SimpleNamespace(module=Detached()), input_shape=(1, 4, 4, 4), device=torch.device("cpu"))
    with caplog.at_level("WARNING", logger="xaudit"):
        assert tune_batch(setup, 6, "off") == (6, {})
    assert "batch size not tuned" in caplog.text
