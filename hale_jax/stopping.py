"""Graceful stops: SIGTERM/SIGINT become a request that training polls after each segment."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Iterator


class StopRequest:
  """Installs handlers for SIGTERM and SIGINT; calling the object returns the signal's name.

  Pass it as ``should_stop`` to :func:`hale_jax.loop.train`: the run checkpoints after the
  segment under way (a few seconds of steps) and raises :class:`hale_jax.loop.Interrupted`.

  A second signal stops the process without that checkpoint, with one line and no traceback,
  exiting with status 128 + the signal's number: at once, or, inside :meth:`hold` (which the
  loop puts around each segment, checkpoint write and restore), as soon as the held work ends.
  The handler itself only raises ``SystemExit`` outside :meth:`hold`.
  """

  def __init__(self, what: str = "saving a checkpoint after the running segment"):
    self.reason: str | None = None
    self.again = False  # a second signal came
    self._what = what
    self._held = 0
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self.reason is not None:  # a second signal: stop without the checkpoint
      self.again = True
      where = "after the running segment" if self._held else "now"
      print(f"{name} received again: stopping {where}, without a checkpoint", file=sys.stderr,
            flush=True)
      if not self._held:
        raise SystemExit(self.exit_code())
      return
    self.reason = name
    print(f"{self.reason} received: {self._what} (send it again to stop at once)",
          file=sys.stderr, flush=True)

  def __call__(self) -> str | None:
    return self.reason

  @contextlib.contextmanager
  def hold(self) -> Iterator[None]:
    """Within the block a second signal waits for the block's end (a segment, a checkpoint
    write) instead of stopping in the middle; then the process exits."""
    self._held += 1
    try:
      yield
    finally:
      self._held -= 1
      if self.again and not self._held:
        raise SystemExit(self.exit_code())

  def exit_code(self) -> int:
    """The conventional exit status for the received signal (128 + its number)."""
    return 128 + (signal.SIGINT if self.reason == "SIGINT" else signal.SIGTERM)
