"""Orbax checkpoints of a run: the training state and the best-valid parameters.

In a run's ``--workdir`` (``hale_jax.rundir`` describes the rest):

- ``checkpoints/``    ``CheckpointManager`` steps (``max_to_keep``; a step is numbered by the
                      optimiser steps done, so checkpoints inside an epoch get their own
                      numbers): the whole training state (parameters, optimiser state, PRNG
                      key, step) and the best-valid parameters so far, plus JSON metadata
                      (epoch and position inside it, training seconds spent, best metrics,
                      validation curve, the config, the data spec and the entity and relation
                      vocabularies); a checkpoint taken inside an epoch also holds a
                      ``partial`` item (the losses of the epoch's steps so far);
- ``best/``           the best-valid parameters alone (latest improvement, numbered alike).

Saves are synchronous: the next segment donates the state's buffers, and a ``kill -9`` may land
at any moment, so a save is finished (orbax writes into a temporary folder and renames it) before
training goes on.  A step that fails to restore is reported and the previous one is tried.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from hale_jax import runfiles
from hale_jax.data import KGData

VOCABULARY_IN_CHECKPOINT_MAX = 1_000_000  # names; beyond, only the hash (entities.tsv has them)


def vocabulary_meta(data: KGData, sha256: str) -> dict[str, Any]:
  """What a checkpoint's metadata says of the vocabularies: the names in id order (so a
  checkpoint is self-contained), or for graphs of more than ``VOCABULARY_IN_CHECKPOINT_MAX``
  names only their hash ``sha256`` (10M names would make every checkpoint's JSON ~150 MB; the
  run folder's ``entities.tsv`` holds them)."""
  if data.num_entities + data.num_relations > VOCABULARY_IN_CHECKPOINT_MAX:
    return {"vocab_sha256": sha256}
  return {"entities": list(data.entities), "relations": list(data.relations)}


UNREADABLE = "unreadable"
PARTIAL = "partial"  # the item (and the meta flag) of a checkpoint taken inside an epoch


class Restored(NamedTuple):
  """A restored checkpoint: host arrays of the state (a pytree), its metadata (a dict), its
  step number, and its ``partial`` item (a pytree; None when the checkpoint has none)."""
  state: object
  meta: dict
  step: int
  partial: object


class UnreadableCheckpoints(Exception):
  """Checkpoints exist but none restores; ``str(err)`` names the steps and the errors."""


@contextlib.contextmanager
def _quiet_orbax():
  """Keeps a failing restore to one line: orbax logs the error with a traceback, and its
  event loop prints more when it is torn down mid-restore."""
  loggers = [logging.getLogger(n) for n in ("absl", "asyncio", "orbax")]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)


def _manager(path: Path, max_to_keep: int, cleanup: bool = False) -> ocp.CheckpointManager:
  """A manager of the steps in ``path``.  With ``cleanup`` (only for the process that trains
  and holds the workdir lock), half-written steps that a killed process left are removed as it
  opens: a step numbered by the optimiser steps is not necessarily written again, which would
  replace them."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False,
                                         cleanup_tmp_directories=cleanup)
  return ocp.CheckpointManager(path.resolve(), options=options)


def _save(mngr: ocp.CheckpointManager, step: int, **items) -> None:
  """Saves ``step``, replacing a step of that number left by an earlier process."""
  if step in mngr.all_steps():
    mngr.delete(step)
  mngr.save(step, args=ocp.args.Composite(**items), force=True)
  mngr.wait_until_finished()


class Checkpointer:
  """Saves and restores training state in ``workdir/checkpoints`` and ``workdir/best``."""

  def __init__(self, workdir: str | os.PathLike, max_to_keep: int = 3,
               log: Callable[[str], None] = print):
    self.workdir = Path(workdir)
    self._max_to_keep = max_to_keep
    self._latest = _manager(self.workdir / runfiles.CHECKPOINTS, max_to_keep, cleanup=True)
    self._best = _manager(self.workdir / runfiles.BEST, 1, cleanup=True)
    self._log = log

  def save(self, step: int, state: Any, meta: dict[str, Any], partial: Any = None) -> None:
    """Saves ``state`` (any pytree) and JSON ``meta`` as ``step``, with ``partial`` (a pytree,
    e.g. the state of an epoch in progress) as an item of its own unless it is None; waits for
    the write."""
    items = {"state": ocp.args.StandardSave(state),
             "meta": ocp.args.JsonSave({**meta, PARTIAL: partial is not None})}
    if partial is not None:
      items[PARTIAL] = ocp.args.StandardSave(partial)
    _save(self._latest, step, **items)

  def save_best(self, step: int, params: Any) -> None:
    """Saves the best-valid parameters as ``step`` of ``best/``."""
    _save(self._best, step, params=ocp.args.StandardSave(params))

  def restore_latest(self, template: Any, partial: Any = None,
                     check: Callable[[Any, dict[str, Any]], None] | None = None
                     ) -> Restored | None:
    """The newest step that restores, or None if there is none.

    ``template`` is a pytree of the state's structure (arrays or ShapeDtypeStructs); the state
    comes back in that structure as host numpy arrays of the *stored* shapes, whatever the
    layout that saved them: the caller places them (``hale_jax.layout``).  A step saved with a
    ``partial`` item restores it in the structure of ``partial`` (None: a step with such an
    item is read without it).  A step that fails
    to restore (partial or corrupt) is reported in one line and the previous one is tried;
    once one restores, the failed newer steps are moved to ``checkpoints/unreadable/`` so that
    no later cleanup deletes them.

    ``check(state, meta)`` may raise (any exception) to reject a step that restored but does
    not fit the run (shapes, metadata); it then counts as unreadable.

    Raises:
      UnreadableCheckpoints: steps exist but none restores (nothing is moved or deleted).
    """
    # numpy leaves: orbax reads each whole array to the host, in the stored shape.
    failed: list[tuple[int, str]] = []
    for step in sorted(self._latest.all_steps(), reverse=True):
      try:
        with _quiet_orbax():
          out = self._restore(step, template, partial)
        if check is not None:
          check(out.state, out.meta)
      except Exception as err:  # pylint: disable=broad-except
        failed.append((step, str(err).splitlines()[0][:200] if str(err) else type(err).__name__))
        self._log(f"checkpoint {self._step_dir(step)} cannot be restored ({failed[-1][1]}); "
                  f"trying the previous one")
        continue
      self._set_aside([s for s, _ in failed])
      return out
    if failed:
      raise UnreadableCheckpoints(
          f"{self.workdir / runfiles.CHECKPOINTS}: no checkpoint restores ("
          + "; ".join(f"step {s}: {why}" for s, why in failed)
          + "); nothing was changed. Pass --overwrite to start over, or move the folder away")
    return None

  def _restore(self, step: int, template: Any, partial: Any) -> Restored:
    # numpy leaves: orbax reads each whole array to the host, in the stored shape.
    abstract = lambda tree: jax.tree.map(  # noqa: E731
        lambda x: np.empty((0,) * len(x.shape), x.dtype), tree)
    out = self._latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract(template)), meta=ocp.args.JsonRestore()))
    meta, part = out["meta"], None
    if meta.pop(PARTIAL, False) and partial is not None:
      part = self._latest.restore(step, args=ocp.args.Composite(
          **{PARTIAL: ocp.args.StandardRestore(abstract(partial))}))[PARTIAL]
    return Restored(out["state"], meta, step, part)

  def _step_dir(self, step: int) -> Path:
    return self.workdir / runfiles.CHECKPOINTS / str(step)

  def _set_aside(self, steps: list[int]) -> None:
    """Moves unreadable steps to ``checkpoints/unreadable/<step>[-n]`` and reopens the manager,
    so its cleanup never deletes them and its latest step is a readable one."""
    if not steps:
      return
    aside = self.workdir / runfiles.CHECKPOINTS / UNREADABLE
    aside.mkdir(exist_ok=True)
    for step in steps:
      target, n = aside / str(step), 1
      while target.exists():
        target, n = aside / f"{step}-{n}", n + 1
      os.replace(self._step_dir(step), target)
      self._log(f"moved the unreadable checkpoint {self._step_dir(step)} to {target}")
    self._latest.close()
    self._latest = _manager(self.workdir / runfiles.CHECKPOINTS, self._max_to_keep, cleanup=True)

  def close(self) -> None:
    self._latest.close()
    self._best.close()


def restore_best(best: Path) -> dict[str, np.ndarray] | None:
  """The parameters of the newest step of a ``best/`` folder, or None when it has none.

  Raises:
    UnreadableCheckpoints: the step does not restore; ``str(err)`` says why in a few words.
  """
  with _quiet_orbax():
    mngr = _manager(best, 1)
    try:
      step = mngr.latest_step()
      if step is None:
        return None
      out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
      return {k: np.asarray(v) for k, v in out["params"].items()}
    except Exception as err:  # pylint: disable=broad-except  # orbax raises many kinds
      why = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
      raise UnreadableCheckpoints(f"the checkpoint cannot be restored ({why})") from None
    finally:
      mngr.close()
