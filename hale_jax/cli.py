"""What every command line shares: bad input ends in one line on stderr and exit status 2.

The commands (``launch``, ``evaluate``, ``export``, ``predict``, ``plot``, ``sweep``,
``labels``) are thin absl mains; their flags are defined only when they run as a command, so
importing one leaves absl's global flags alone.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable

from absl import app, logging

from hale_jax import runfiles
from hale_jax.data import one_line

# What a user can cause: bad flags or files (DataError is a ValueError), missing or existing
# paths, outputs that cannot be written.  Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, runfiles.OutputError)


def exit_now(status: int) -> None:
  """Ends the process with ``status`` once stdout and stderr are flushed, skipping the
  interpreter's teardown: a command that stops on an error has nothing left to finish, and the
  teardown of the native thread pools behind JAX and the checkpoint library can (rarely) abort
  after the message, turning exit status 2 into a crash."""
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said
      pass
  os._exit(status)  # pylint: disable=protected-access


def fail(err: BaseException | str, status: int = 2) -> None:
  """Prints ``error: <one line>`` to stderr and exits with ``status``."""
  print(f"error: {one_line(err)}", file=sys.stderr)
  exit_now(status)


def warn(line: str) -> None:
  """Prints a warning (or any message that is not the command's output) to stderr."""
  print(line, file=sys.stderr, flush=True)


def user_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """Wraps an absl main: quiet logging (no INFO lines from JAX's backend search), and the
  errors of :data:`USER_ERRORS` as one line and exit status 2."""
  @functools.wraps(main)
  def wrapped(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except USER_ERRORS as err:
      fail(err)
  return wrapped


def run(main: Callable[[list[str]], None], define_flags: Callable[[], None]) -> None:
  """Defines the command's flags, then runs its main under absl."""
  define_flags()
  app.run(main)


def no_arguments(argv: list[str]) -> None:
  """Refuses positional arguments (every input is a flag)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")


def check_output(path, overwrite: bool) -> None:
  """Refuses an output path that is a run's own file (``runfiles.refuse_run_file``), and an
  existing one without ``--overwrite``."""
  runfiles.refuse_run_file(path)
  if Path(path).exists() and not overwrite:
    raise FileExistsError(f"{path}: already exists; choose another --output or pass "
                          f"--overwrite to replace it")
