"""``hale_jax.plot``: curves of several runs, labelled by the settings that differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hale_jax import plot
from hale_jax import rundir, runfiles
from hale_jax.config import Config

from tests import helpers


def _curve_run(folder: Path, finished: bool = True, **config) -> Path:
  folder.mkdir(parents=True)
  cfg = Config.make(**{**helpers.RUN, "max_epochs": 3, **config}).flat()
  rundir.write_run(folder, {"config": cfg})
  curve = [{"epoch": e, "train_seconds": 0.5 * e, "loss": 1.0 / e,
            "valid_mrr": 0.1 * e * cfg["learning_rate"] * 100} for e in (1, 2, 3)]
  if finished:
    runfiles.write_json(folder / "results.json", {"curve": curve, "metrics": {}})
  else:
    (folder / "metrics.jsonl").write_text("".join(json.dumps(p) + "\n" for p in curve))
  return folder


def test_plot_two_runs_labelled_by_the_differing_setting(tmp_path):
  a = _curve_run(tmp_path / "a", learning_rate=0.01)
  b = _curve_run(tmp_path / "b", finished=False, learning_rate=0.02, max_epochs=9)
  configs = [plot.read_curve(a)[0], plot.read_curve(b)[0]]
  assert plot.read_curve(b)[1][2]["valid_mrr"] == pytest.approx(0.6)
  assert plot.labels(configs, ["a", "b"]) == ["learning_rate=0.01 max_epochs=3",
                                              "learning_rate=0.02 max_epochs=9"]
  assert plot.labels(configs[:1], ["a"]) == ["a"]
  other_data = [{**configs[0], "data": "CoDEx-S"}, {**configs[0], "data": "CoDEx-M", "dim": 16}]
  assert plot.labels(other_data, ["a", "b"]) == ["data=CoDEx-S dim=8", "data=CoDEx-M dim=16"]
  same_name = [{**configs[0], "data": "kg", "data_spec": {"kind": "folder", "path": p}}
               for p in ("/x/kg", "/y/kg")]
  assert plot.labels(same_name, ["a", "b"]) == ["data=/x/kg", "data=/y/kg"]
  out = plot.plot([str(a), str(b)], tmp_path / "curve.png")
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
  with pytest.raises(FileNotFoundError, match="no run.json"):
    plot.read_curve(tmp_path)
