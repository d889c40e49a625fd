"""Run folders: the run spec, orbax checkpoints, and the best-valid parameters.

A run's ``--workdir`` holds

- ``run.json``        the config, the data spec and a hash of the vocabularies, written at start;
- ``checkpoints/``    orbax ``CheckpointManager`` steps (one per saved epoch, ``max_to_keep``):
                      the whole training state (parameters, optimiser state, PRNG key, step) and
                      the best-valid parameters so far, plus JSON metadata (epoch, training
                      seconds spent, best metrics, validation curve, the config, the data
                      spec and the entity and relation vocabularies);
- ``best/``           the best-valid parameters alone (orbax, latest improvement);
- ``best_params.npz``, ``results.json``, ``entities.tsv``, ``relations.tsv`` at the end.

Saves are synchronous: the next epoch donates the state's buffers, and a ``kill -9`` may land at
any moment, so a save is finished (orbax writes into a temporary folder and renames it) before
training goes on.  A step that fails to restore is reported and the previous one is tried.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from hale_jax import models
from hale_jax.data import KGData

RUN_FILE = "run.json"
# Config fields that may change when a run is resumed: budgets, evaluation and checkpoint
# settings, the layout, and ``lse_chunk``, which only changes how the same loss is computed
# (chunked or plain: equal up to float summation order); its default became per-backend on
# 2026-11-26, so a run recorded with 4096 must resume under the default.
RESUMABLE_FIELDS = frozenset({"max_seconds", "max_epochs", "eval_every", "eval_chunk",
                              "checkpoint_every_epochs", "checkpoint_every_seconds",
                              "max_to_keep", "mesh", "lse_chunk"})
_OUTPUTS = ("checkpoints", "best", RUN_FILE, "results.json", "best_params.npz")


def _same_as_before(key: str, old_config: dict[str, Any], new_value: Any) -> bool:
  """A config field added after older runs were recorded, whose new value trains those runs
  exactly as before (added 2026-11-26, ``lr_schedule`` 2026-11-27): ``bias`` is ``auto`` for
  losses that never had entity biases, ``matmul`` is ``float32``, ``rotation_init`` is
  ``normal`` or the model has no rotation table, ``lr_schedule`` is ``constant``."""
  if key in old_config:
    return False
  if key == "bias":
    return new_value == "auto" and old_config.get("loss", "hale") not in ("samneg", "advneg")
  if key == "rotation_init":
    try:
      rotates = models.canonical_model(str(old_config.get("model", ""))) in models.ROTATION_MODELS
    except ValueError:  # a model this code does not know: treat it as changed
      rotates = True
    return new_value == "normal" or not rotates
  if key == "lr_schedule":
    return new_value == "constant"
  return key == "matmul" and new_value == "float32"


def vocabulary_hash(data: KGData) -> str:
  """sha256 over the entity and relation names, in id order."""
  h = hashlib.sha256()
  for names in (data.entities, data.relations):
    for n in names:
      h.update(n.encode("utf-8") + b"\n")
    h.update(b"\0")
  return h.hexdigest()


VOCABULARY_IN_CHECKPOINT_MAX = 1_000_000  # names; beyond, only the hash (entities.tsv has them)


def vocabulary_meta(data: KGData, sha256: str | None = None) -> dict[str, Any]:
  """What a checkpoint's metadata says of the vocabularies: the names in id order (so a
  checkpoint is self-contained), or for graphs of more than
  ``VOCABULARY_IN_CHECKPOINT_MAX`` names only their :func:`vocabulary_hash` (10M names would
  make every checkpoint's JSON ~150 MB; the run folder's ``entities.tsv`` holds them)."""
  if data.num_entities + data.num_relations > VOCABULARY_IN_CHECKPOINT_MAX:
    return {"vocab_sha256": sha256 or vocabulary_hash(data)}
  return {"entities": list(data.entities), "relations": list(data.relations)}


def read_run(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The ``run.json`` of ``workdir``, or None."""
  path = Path(workdir) / RUN_FILE
  return json.loads(path.read_text()) if path.exists() else None


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes ``obj`` as indented JSON through a temporary file and a rename (never half-written)."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2) + "\n")
  os.replace(tmp, path)


def write_run(workdir: str | os.PathLike, run: dict[str, Any]) -> None:
  write_json(Path(workdir) / RUN_FILE, run)


def mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """What differs between two run specs, ignoring fields a resume may change."""
  diffs = []
  if old.get("vocab_sha256") != new.get("vocab_sha256"):
    diffs.append(f"dataset vocabulary ({old.get('dataset')} vs {new.get('dataset')})")
  oc, nc = old.get("config", {}), new.get("config", {})
  for key in sorted(set(oc) | set(nc)):
    if (key not in RESUMABLE_FIELDS and oc.get(key) != nc.get(key)
        and not _same_as_before(key, oc, nc.get(key))):
      diffs.append(f"{key} ({oc.get(key)!r} vs {nc.get(key)!r})")
  return diffs


def clear_outputs(workdir: str | os.PathLike) -> None:
  """Deletes an earlier run's outputs (for ``--overwrite``)."""
  for name in _OUTPUTS:
    p = Path(workdir) / name
    if p.is_dir():
      shutil.rmtree(p)
    elif p.exists():
      p.unlink()


def _manager(path: Path, max_to_keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
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
    self._latest = _manager(self.workdir / "checkpoints", max_to_keep)
    self._best = _manager(self.workdir / "best", 1)
    self._log = log

  def save(self, epoch: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves ``state`` (any pytree) and JSON ``meta`` as step ``epoch``; waits for the write."""
    _save(self._latest, epoch, state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

  def save_best(self, epoch: int, params: Any) -> None:
    """Saves the best-valid parameters as step ``epoch`` of ``best/``."""
    _save(self._best, epoch, params=ocp.args.StandardSave(params))

  def restore_latest(self, template: Any, *older_templates: Any
                     ) -> tuple[Any, dict[str, Any], int] | None:
    """``(state, meta, epoch)`` of the newest step that restores, or None if there is none.

    ``template`` is a pytree of the state's structure (arrays or ShapeDtypeStructs); the state
    comes back in that structure as host numpy arrays of the *stored* shapes, whatever the
    layout (device, mesh, padding) that saved them: the caller places them (see
    ``hale_jax.sharding.place_state``).  ``older_templates`` are the structures of earlier
    layouts of the same state, tried in turn for a step that ``template`` does not fit; the
    state then comes back in the older structure, for the caller to convert.  A step that
    fails to restore with every template (partial or corrupt) is reported and skipped.
    """
    for step in sorted(self._latest.all_steps(), reverse=True):
      reason = None
      for tree in (template, *older_templates):
        # numpy leaves: orbax reads each whole array to the host, in the stored shape.
        abstract = jax.tree.map(lambda x: np.empty((0,) * len(x.shape), x.dtype), tree)
        try:
          out = self._latest.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as err:  # pylint: disable=broad-except
          if reason is None:  # the current layout's reason is the one worth reporting
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
          continue
        return out["state"], out["meta"], step
      self._log(f"checkpoint {self.workdir / 'checkpoints' / str(step)} cannot be restored "
                f"({reason}); trying the previous one")
    return None

  def close(self) -> None:
    self._latest.close()
    self._best.close()


def load_best_params(workdir: str | os.PathLike) -> dict[str, np.ndarray]:
  """The best-valid parameters of a run: ``best_params.npz`` if the run ended, else ``best/``."""
  workdir = Path(workdir)
  npz = workdir / "best_params.npz"
  if npz.exists():
    with np.load(npz) as f:
      return {k: f[k] for k in f.files}
  best = workdir / "best"
  if best.is_dir():
    mngr = _manager(best, 1)
    step = mngr.latest_step()
    if step is not None:
      out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
      return {k: np.asarray(v) for k, v in out["params"].items()}
  raise FileNotFoundError(f"{workdir}: no best_params.npz and no best/ checkpoint; is this the "
                          f"--workdir of a hale_jax run?")
