"""Progress lines for long jobs (ranking a split, answering a file of queries).

A :class:`ProgressLine` is told how much is done after each piece of work; it writes a line
(done, share, rate, ETA) when ``every`` seconds have passed since the last line or the start,
so a job that ends within ``every`` seconds says nothing.
"""

from __future__ import annotations

import time
from typing import Callable

PROGRESS_SECONDS = 15.0  # between two lines of a long job


def duration(seconds: float) -> str:
  """``"42s"``, ``"3m05s"``, ``"2h07m"``."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class ProgressLine:
  """Lines like ``ranking test: 12,288/40,000 queries (31%), 820 queries/s, ETA 34s``."""

  def __init__(self, what: str, total: int, log: Callable[[str], None],
               every: float = PROGRESS_SECONDS, unit: str = "queries"):
    self.what, self.total, self.log, self.every, self.unit = what, int(total), log, every, unit
    self.start = self.last = time.monotonic()
    self.lines = 0

  def update(self, done: int) -> None:
    """Records that ``done`` of ``total`` are done; writes a line when one is due."""
    now = time.monotonic()
    if now - self.last < self.every:
      return
    self.last = now
    self.lines += 1
    elapsed = max(now - self.start, 1e-9)
    share = done / self.total if self.total else 1.0
    if done >= self.total:
      self.log(f"{self.what}: {done:,}/{self.total:,} {self.unit} (100%) in "
               f"{duration(elapsed)}")
      return
    rate = done / elapsed
    eta = duration((self.total - done) / rate) if rate > 0 else "unknown"
    self.log(f"{self.what}: {done:,}/{self.total:,} {self.unit} ({share:.0%}), "
             f"{rate:,.0f} {self.unit}/s, ETA {eta}")
