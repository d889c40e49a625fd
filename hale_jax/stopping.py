"""Graceful stops: SIGTERM/SIGINT become a request that training polls after each epoch."""

from __future__ import annotations

import signal
import sys


class StopRequest:
  """Installs handlers for SIGTERM and SIGINT; calling the object returns the signal's name.

  Pass it as ``should_stop`` to :func:`hale_jax.loop.train`: the run checkpoints after its
  current epoch and raises :class:`hale_jax.loop.Interrupted`.  A second signal raises
  ``KeyboardInterrupt`` at once.
  """

  def __init__(self, what: str = "saving a checkpoint after the current epoch"):
    self.reason: str | None = None
    self._what = what
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    if self.reason is not None:  # a second signal: stop now
      raise KeyboardInterrupt
    self.reason = signal.Signals(signum).name
    print(f"{self.reason} received: {self._what} (send it again to stop at once)",
          file=sys.stderr, flush=True)

  def __call__(self) -> str | None:
    return self.reason

  def exit_code(self) -> int:
    """The conventional exit status for the received signal (128 + its number)."""
    return 128 + (signal.SIGINT if self.reason == "SIGINT" else signal.SIGTERM)
