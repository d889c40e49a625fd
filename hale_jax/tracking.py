"""Live metrics: ``metrics.jsonl`` in the run folder, TensorBoard and Weights & Biases.

Each writer is a callback (``hale_jax.callbacks``) that records every validation as it
happens, so a second terminal, a notebook or a dashboard can follow a run:

- :class:`MetricsFile`: ``<workdir>/metrics.jsonl``, one strict-JSON line per validation,
  flushed as it is written (always on for the process that writes files);
- :class:`TensorBoardWriter`: event files through ``tensorboardX`` (no TensorFlow needed),
  with ``--tensorboard_dir``;
- :class:`WandbWriter`: ``wandb.log``, with ``--wandb_project``.

``tensorboardX`` and ``wandb`` are optional extras (``pip install hale_jax[tracking]``); a
missing one is a clear error when the run starts.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable

from hale_jax import runfiles
from hale_jax.callbacks import Callback, Validation



def validation_record(v: Validation) -> dict[str, Any]:
  """The numbers of one validation, flat: epoch, step, seconds, loss, speed, learning rate,
  and ``valid_<metric>`` for the realistic tie rule plus ``valid_<rule>_<metric>`` for the
  pessimistic and optimistic ones."""
  record = {"epoch": v.epoch, "step": v.step, "train_seconds": round(v.train_seconds, 3),
            "eval_seconds": round(v.eval_seconds, 3), "loss": v.loss,
            "triples_per_second": round(v.triples_per_second, 1),
            "learning_rate": v.learning_rate}
  for rule, metrics in v.metrics.items():
    prefix = "valid_" if rule == "realistic" else f"valid_{rule}_"
    record.update({prefix + k: value for k, value in metrics.items()})
  return record


def _import(module: str, extra: str):
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ValueError(f"{module} is not installed; pip install {module} (or hale_jax[{extra}])"
                     ) from None


def read_metrics(path: Path, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl``.  A line that is not a JSON record (the last one torn
  by a process that died while appending it) is left out, with a warning naming it."""
  records = []
  lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
        raise ValueError("not a record with an epoch")
    except ValueError as err:
      torn = "torn last line" if number >= len(lines) - 1 else "unreadable line"
      log(f"warning: {path}:{number}: {torn} left out ({str(err)[:80]})")
      continue
    records.append(record)
  return records


def _before(record: dict[str, Any], info: dict[str, Any]) -> bool:
  """Whether a metrics record lies at or before the checkpoint a run resumes from (by optimiser
  steps; by epochs for records written before they were numbered by steps)."""
  if isinstance(record.get("step"), int):
    return record["step"] <= info["step"]
  return record["epoch"] <= info["epoch"]


class MetricsFile(Callback):
  """Appends one JSON line per validation to ``<workdir>/metrics.jsonl``; a resumed run first
  drops the lines of steps after its checkpoint (they were trained again) and any torn line."""

  def __init__(self, workdir: str | Path, log: Callable[[str], None] = print):
    self.path = Path(workdir) / runfiles.METRICS
    self._log = log

  def on_start(self, info: dict[str, Any]) -> None:
    if not self.path.exists():
      return
    kept = [r for r in read_metrics(self.path, self._log) if _before(r, info)]
    runfiles.write_text(self.path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))

  def on_validation(self, v: Validation) -> None:
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(validation_record(v), allow_nan=False) + "\n")
      f.flush()


class TensorBoardWriter(Callback):
  """Scalars per validation under ``valid/``, ``train/`` and ``speed/``, step = epoch."""

  def __init__(self, logdir: str | Path):
    self._writer = _import("tensorboardX", "tracking").SummaryWriter(str(logdir))

  def on_validation(self, v: Validation) -> None:
    for key, value in validation_record(v).items():
      if key.startswith("valid_"):
        self._writer.add_scalar(f"valid/{key[len('valid_'):]}", value, v.epoch)
    self._writer.add_scalar("train/loss", v.loss, v.epoch)
    if v.learning_rate is not None:
      self._writer.add_scalar("train/learning_rate", v.learning_rate, v.epoch)
    self._writer.add_scalar("speed/triples_per_second", v.triples_per_second, v.epoch)
    self._writer.flush()

  def on_end(self, results: dict[str, Any]) -> None:
    for rule in ("realistic", "pessimistic"):
      for key, value in results["metrics"]["test"][rule].items():
        self._writer.add_scalar(f"test_{rule}/{key}", value, results["metrics"]["epochs"])
    self._writer.close()


class WandbWriter(Callback):
  """``wandb.log`` of each validation's record; the config goes to ``wandb.init``."""

  def __init__(self, project: str, config: dict[str, Any], name: str):
    self._wandb = _import("wandb", "tracking")
    self._run = self._wandb.init(project=project, config=config, name=name)

  def on_validation(self, v: Validation) -> None:
    self._run.log(validation_record(v), step=v.epoch)

  def on_end(self, results: dict[str, Any]) -> None:
    self._run.summary.update({f"test_{k}": value
                              for k, value in results["metrics"]["test"]["realistic"].items()})
    self._run.finish()
