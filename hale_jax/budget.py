"""When a run trains, stops, validates and checkpoints, decided between segments.

Training runs in segments: a bounded number of steps of one epoch in one compiled call
(``hale_jax.step.segment_fn``).  :class:`SegmentSizer` sizes them from the measured step time
to take about ``--segment_seconds`` (a small graph's epoch is then one segment); after each,
:class:`Budget` says whether training stops and whether to validate, and
:class:`CheckpointPolicy` whether to checkpoint.  The segmentation never changes the numbers:
every segment runs the same compiled code on the same epoch draw.
"""

from __future__ import annotations

import time

from hale_jax.config import Config
from hale_jax.trainer import Progress

PROBE_STEPS = 8  # the first segment of a process: its time sizes the next ones


class SegmentSizer:
  """How many steps the next segment runs: about ``segment_seconds`` at the last measured time
  per step, never past the epoch's end, and the rest of the epoch at once when what would
  remain is under half a segment (0 seconds: whole epochs).  The first segment of a process
  runs ``PROBE_STEPS`` steps to measure the step time."""

  def __init__(self, segment_seconds: float, steps_per_epoch: int):
    self.target = segment_seconds
    self.steps = steps_per_epoch
    self.step_seconds: float | None = None  # measured
    self.sized = False  # a segment sized from a measured step time (or a whole epoch) has run

  def count(self, epoch_step: int) -> int:
    left = self.steps - epoch_step
    if not self.target:
      return left
    if self.step_seconds is None:
      return min(left, PROBE_STEPS)
    n = max(1, int(self.target / max(self.step_seconds, 1e-12)))
    return left if left - n < n / 2 else n

  def seconds(self, epoch_step: int) -> float | None:
    """The expected duration of the next segment; None until a segment sized from a measured
    step time has run (the probe alone says too little to stop on)."""
    if not self.sized:
      return None
    return self.step_seconds * self.count(epoch_step)

  def measured(self, count: int, seconds: float) -> None:
    """Records a segment of ``count`` steps (as :meth:`count` sized it) in ``seconds``."""
    self.sized = self.sized or self.step_seconds is not None or not self.target
    self.step_seconds = seconds / count


class Budget:
  """When training stops (``max_epochs``, ``max_seconds``) and when it validates."""

  def __init__(self, config: Config):
    self.b = config.budget

  def exhausted(self, p: Progress, next_seconds: float | None) -> str | None:
    """Why no further segment runs, or None.  A time budget stops before a segment that would
    overrun it (``next_seconds``, its expected duration; None: unknown, so it runs), and never
    before the first segment of a run (a process sizes its segments from its first ones, so
    it trains at least a sized segment: on a small graph, its first epoch)."""
    if self.b.max_epochs and p.epoch >= self.b.max_epochs:
      return f"max_epochs {self.b.max_epochs} reached"
    started = p.epoch or p.epoch_step
    if (self.b.max_seconds and started and next_seconds is not None
        and p.train_seconds + next_seconds > self.b.max_seconds):
      return f"training budget {self.b.max_seconds:g}s reached"
    return None

  def validate_now(self, p: Progress, epoch_ended: bool) -> bool:
    """At an epoch's end: every ``eval_every`` epochs, at the end of the epoch budget, and in
    auto mode about 20 times per budget.  Inside an epoch only the auto mode of a time budget
    validates (every 1/20 of it), and it skips a validation while validating has taken more
    than half the training time."""
    b = self.b
    if epoch_ended and b.max_epochs and p.epoch >= b.max_epochs:
      return True
    if b.eval_every:
      return epoch_ended and p.epoch % b.eval_every == 0
    if b.max_seconds:
      due = (p.train_seconds - p.last_eval_at >= b.max_seconds / 20
             or p.train_seconds >= b.max_seconds)
      return due and p.eval_seconds <= p.train_seconds / 2
    return epoch_ended and p.epoch % max(1, b.max_epochs // 20) == 0


class CheckpointPolicy:
  """Checkpoints every ``checkpoint_every_epochs`` epochs and ``checkpoint_every_seconds``
  (after the segment in which they passed, so also inside an epoch)."""

  def __init__(self, config: Config):
    self.every_epochs = config.run.checkpoint_every_epochs
    self.every_seconds = config.run.checkpoint_every_seconds
    self.last = time.perf_counter()

  def seconds_due(self) -> bool:
    return bool(self.every_seconds and time.perf_counter() - self.last >= self.every_seconds)

  def due(self, epoch_ended: bool, epoch: int, seconds_due: bool) -> bool:
    return seconds_due or bool(epoch_ended and self.every_epochs
                               and epoch % self.every_epochs == 0)

  def saved(self) -> None:
    self.last = time.perf_counter()
