"""The shared optimisation loop: Adam on a batch of images, a step cap and a deadline.

Every sample's objective depends on its own image only (the network runs in eval mode),
so the batch's losses are summed: each image gets exactly the gradient it would get
alone, and one forward/backward serves all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class TimeBudget:
    """A wall-clock budget shared out over a known number of optimisation jobs.

    Each job may use the time left divided by the jobs left, so a job that finishes early
    hands its unused time to the next ones and the total never exceeds the budget (up to
    one optimisation step per job).
    """

    def __init__(self, seconds: float, jobs: int):
        self.end = time.perf_counter() + float(seconds)
        self.jobs_left = max(int(jobs), 1)

    def next_deadline(self) -> float:
        """The deadline of the next job (a ``time.perf_counter`` value)."""
        now = time.perf_counter()
        share = max(self.end - now, 0.0) / self.jobs_left
        self.jobs_left = max(self.jobs_left - 1, 1)
        return now + share


@dataclass
class OptimisationRun:
    """What one optimisation did.

    Attributes:
        steps: Adam steps taken.
        stopped_early: True when the deadline stopped it before the step cap.
        seconds: wall-clock time of the loop.
        history: ``(step, mean total loss)`` pairs, about 20 per run.
    """

    steps: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "stopped_early": self.stopped_early, "seconds": round(self.seconds, 3),
                "history": [[s, v] for s, v in self.history]}


def run_adam(
    tensors: list[torch.Tensor],
    objective: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    deadline: float,
) -> OptimisationRun:
    """Minimise ``objective(step).sum()`` over ``tensors`` in place with Adam (Kingma & Ba 2015).

    The learning rate falls tenfold for the last fifth of the steps or of the time to the
    deadline, whichever comes first: large steps find the basin, small ones settle the
    fine structure.

    Args:
        tensors: leaf tensors with ``requires_grad``; updated in place.
        objective: per-sample losses ``(N,)`` at the current tensors, given the step index.
        steps: the step cap.
        lr: Adam's learning rate.
        deadline: ``time.perf_counter()`` value after which no new step starts (the first
            step always runs).

    Returns:
        The run's record (steps, early stop, time, loss history).
    """
    optimiser = torch.optim.Adam(tensors, lr=lr)
    record = OptimisationRun()
    every = max(steps // 20, 1)
    started = time.perf_counter()
    settle_at = started + 0.8 * max(deadline - started, 0.0)  # the deadline may come before the step cap
    decayed = False
    for step in range(steps):
        if step > 0 and time.perf_counter() >= deadline:
            record.stopped_early = True
            break
        if not decayed and steps >= 10 and (step >= 0.8 * steps or time.perf_counter() >= settle_at):
            decayed = True
            for group in optimiser.param_groups:
                group["lr"] = lr * 0.1
        optimiser.zero_grad(set_to_none=True)
        losses = objective(step)
        losses.sum().backward()
        optimiser.step()
        record.steps = step + 1
        if step % every == 0 or step == steps - 1:
            record.history.append((step, float(losses.detach().mean())))
    record.seconds = time.perf_counter() - started
    return record
