"""benchmarks.summarize: a RESULTS.md row and curve from a run folder's results.json."""

from __future__ import annotations

import json

import pytest

from benchmarks import summarize
from hale_jax import runfiles
from hale_jax.config import Config


def _results() -> dict:
  metrics = {"mrr": 0.25, "hits@1": 0.125, "hits@10": 0.5}
  return {"config": Config.make(model="RotE", dim=16, lam=1.0).flat(),
          "dataset": {"name": "WN18RR"},
          "metrics": {"valid": {"realistic": {"mrr": 0.3}},
                      "test": {"realistic": metrics, "pessimistic": {**metrics, "mrr": 0.2}},
                      "epochs": 7},
          "timings": {"train_seconds": 12.4, "compile_seconds": 3.21, "eval_seconds": 1.6},
          "device": {"kind": "cpu"}, "layout": {"mesh": "data:2,model:4", "processes": 1},
          "git_commit": "0123456789abcdef",
          "curve": [{"epoch": 7, "train_seconds": 12.4, "loss": 1.5, "valid_mrr": 0.3,
                     "valid_hits@10": 0.55}]}


def test_row_and_curve(tmp_path, capsys):
  runfiles.write_json(tmp_path / runfiles.RESULTS, _results())
  summarize.main([str(tmp_path), "--curve"])
  out = capsys.readouterr().out.splitlines()
  assert out[0] == summarize.HEADER.splitlines()[0]
  assert out[2] == ("| WN18RR | RotE-16 | 1.0 | 0.1 | 1024 | 0.005 | 0.3000 | 0.2500 | 0.1250 | "
                    "0.5000 | 0.2000 | 7 | 12 | 3.2 | 2 | cpu | data:2,model:4 | 0123456 |")
  assert out[-1] == "| 7 | 12 | 1.5000 | 0.3000 | 0.5500 |"
  assert len(out[0].split("|")) == len(out[2].split("|"))


def test_missing_results_exit_with_one_line(tmp_path):
  with pytest.raises(SystemExit, match="results.json: missing"):
    summarize.main([str(tmp_path)])
  (tmp_path / "run").mkdir()
  results = _results()
  del results["layout"]  # a run without a layout record: one device
  (tmp_path / "run" / runfiles.RESULTS).write_text(json.dumps(results))
  assert "| cpu | one device | 0123456 |" in summarize.row(
      summarize.read_results(str(tmp_path / "run")))
