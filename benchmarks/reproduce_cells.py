"""The cells of ``benchmarks.reproduce`` and their configs, from the paper's tables and the
dataset flagfiles.

A :class:`Cell` is one training run: an experiment's dataset, model, variant, dimension and
seed. Its config (:func:`make_config`) is what the launcher would train with the dataset's
flagfile: each ``launch/*.flags`` is read through ``hale_jax.options.parse_flagfile`` and keyed
by its ``--dataset`` (:func:`flagfiles`); every config field it sets applies
(:func:`hyperparameters`) except the cell's own (:data:`CELL_FIELDS`), the variant's fields go
on top, and the budget is the flagfile's ``--max_seconds`` times ``--budget_scale``
(:func:`budget_seconds`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

from benchmarks.paper_tables import EXPERIMENTS, VARIANTS, Variant, all_variants
from hale_jax import datasets, models, options
from hale_jax.config import BudgetConfig, Config

ROOT = Path(__file__).resolve().parents[1]
FLAGFILE_DIR = ROOT / "launch"
SYNTHETIC = "synthetic"
CELL_FIELDS = ("model", "dim", "seed", "max_seconds", "max_epochs")  # set by the cell


@dataclasses.dataclass
class Cell:
  """One training run of an experiment."""
  experiment: str
  dataset: str
  model: str
  variant: Variant
  dim: int
  seed: int

  @property
  def cell_id(self) -> str:
    slug = re.sub(r"[^a-z0-9]+", "", self.dataset.lower())
    return f"{slug}-{self.model}-{self.dim}d-{self.variant.key}-s{self.seed}"


def plan(experiment: str, datasets_, models_, variants=None, dim: int | None = None,
         seed: int = 0) -> list[Cell]:
  """The cells of ``experiment``, dataset-major (each dataset is loaded once)."""
  spec = EXPERIMENTS[experiment]
  chosen = VARIANTS[experiment]  # the default: the paper's variants, not the opt-in ones
  if variants:
    known = {v.key: v for v in all_variants(experiment)}
    unknown = [k for k in variants if k not in known]
    if unknown:
      raise ValueError(f"unknown variant(s) {', '.join(unknown)} for {experiment}; choose from "
                       f"{', '.join(known)}")
    chosen = [known[k] for k in variants]
  return [Cell(experiment, d, m, v, dim or spec["dim"], seed)
          for d in datasets_ for m in models_ for v in chosen]


# ------------------------------------------------------------------ settings from launch/*.flags

@functools.lru_cache(maxsize=None)
def _flag_values(path: Path):
  return options.parse_flagfile(str(path))


@functools.lru_cache(maxsize=None)
def flagfiles() -> dict[str, Path]:
  """``{dataset: its flagfile}`` over ``launch/*.flags``, each keyed by its ``--dataset``."""
  return {datasets.canonical_name(_flag_values(p).dataset): p
          for p in sorted(FLAGFILE_DIR.glob("*.flags"))}


def hyperparameters(dataset: str) -> dict[str, Any]:
  """The config fields the dataset's flagfile sets, without the cell's own
  (:data:`CELL_FIELDS`); empty for a dataset without a flagfile (``synthetic``)."""
  if dataset not in flagfiles():
    return {}
  fv = _flag_values(flagfiles()[dataset])
  return {f.name: fv[f.name].value for _, f, _ in options.config_fields()
          if fv[f.name].present and f.name not in CELL_FIELDS}


def budget_seconds(dataset: str) -> float:
  """The training budget of a dataset at ``--budget_scale=1``: its flagfile's
  ``--max_seconds``, or the config's default for a dataset without one."""
  if dataset in flagfiles():
    return float(_flag_values(flagfiles()[dataset]).max_seconds)
  return float(BudgetConfig().max_seconds)


def canonical_dataset(name: str) -> str:
  """The dataset's canonical name; raises ValueError unless it is ``synthetic`` or has a
  flagfile."""
  if name.strip().lower() == SYNTHETIC:
    return SYNTHETIC
  from hale_jax.data import DataError  # pylint: disable=import-outside-toplevel
  choices = ", ".join([*flagfiles(), SYNTHETIC])
  try:
    canonical = datasets.canonical_name(name.strip())
  except DataError:
    canonical = None
  if canonical not in flagfiles():
    raise ValueError(f"unknown dataset {name!r}; choose from {choices} (other folders: "
                     f"--data_dir_override)")
  return canonical


def canonical_models(names) -> list[str]:
  """``models.MODEL_NAMES`` spellings of ``names`` (any case); raises ValueError."""
  by_key = {models.canonical_model(m): m for m in models.MODEL_NAMES}
  return [by_key[models.canonical_model(name.strip())] for name in names]


def make_config(cell: Cell, budget_scale: float, max_epochs: int) -> Config:
  """The cell's config: its dataset's flagfile settings, the variant's fields on top, and the
  cell's model, dimension, seed and scaled budget."""
  return Config.make(**{**hyperparameters(cell.dataset), **cell.variant.overrides,
                        "model": cell.model, "dim": cell.dim, "seed": cell.seed,
                        "max_seconds": budget_seconds(cell.dataset) * budget_scale,
                        "max_epochs": max_epochs or 0})


def data_spec(dataset: str, data_dir_override: str | None) -> dict[str, str]:
  """How ``hale_jax.dataspec`` finds the dataset (kept in the cell's ``run.json``)."""
  if data_dir_override:
    root = Path(data_dir_override).resolve()
    folder = root / dataset if (root / dataset / "train.txt").is_file() else root
    return {"kind": "folder", "path": str(folder)}
  if dataset == SYNTHETIC:
    return {"kind": "synthetic"}
  return {"kind": "dataset", "name": dataset}
