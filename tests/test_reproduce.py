"""benchmarks/reproduce.py: the paper's cells, its numbers, and tiny end-to-end runs.

The end-to-end runs train on the generated graph for one or two epochs at dimension 8 (a few
seconds a cell, most of it compilation).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"
TINY = ["--datasets=synthetic", "--max_epochs=2", "--budget_scale=0.001", "--dim_override=8"]
TABLE5 = ["HaLE", "w/o Activation", "w/o PosSquare", "w/o RelRatio", "HA + SamNeg",
          "HA + AllNeg"]


def _module():
  spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules.setdefault("reproduce", module)  # dataclasses look their module up there
  spec.loader.exec_module(module)  # defines no flags: those are made only under __main__
  return module


def _run(*args, env=None):
  env = dict(os.environ if env is None else env)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
  proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def _rows(outdir: Path) -> list[dict]:
  with open(outdir / "results.csv", newline="") as f:
    return list(csv.DictReader(f))


def test_cells_and_paper_numbers():
  rep = _module()
  counts = {e: len(rep.plan(e, rep.EXPERIMENTS[e]["datasets"], rep.EXPERIMENTS[e]["models"]))
            for e in rep.EXPERIMENTS}
  assert counts == {"table2": 20, "table3": 30, "table5": 18, "fig2_losses": 15,
                    "fig2_activations": 15}
  for exp in ("table2", "table3", "table5"):  # the paper gives a number for each of these cells
    for cell in rep.plan(exp, rep.EXPERIMENTS[exp]["datasets"], rep.EXPERIMENTS[exp]["models"]):
      paper = rep.paper_numbers(cell.dataset, cell.model, cell.dim, cell.variant)
      assert paper is not None and len(paper) == 3, cell
      mrr, h10, h1 = paper
      assert 0 < h1 <= mrr <= h10 < 1, cell  # MRR lies between Hits@1 and Hits@10
  # Spot checks against the paper's tables.
  assert rep.PAPER[("WN18RR", "RotL", 32, "hale")] == (.471, .558, .424)      # Tables 2 and 5
  assert rep.PAPER[("FB15k-237", "RotL", 32, "samneg")] == (.140, .266, .079)  # Table 2
  assert rep.PAPER[("CoDEx-L", "RotL", 256, "samneg")] == (.055, .113, .026)   # Table 3
  assert rep.PAPER[("CoDEx-M", "RotL", 32, "wo-possquare")] == (.241, .351, .185)  # Table 5
  # the flagfile's values, read here from its text (they change as the flagfiles are tuned)
  hp = rep.hyperparameters("WN18RR")
  text = (ROOT / "launch" / "wn18rr.flags").read_text()
  flagged = dict(line[2:].split("=", 1) for line in text.split() if line.startswith("--"))
  assert hp == {k: type(hp[k])(flagged[k]) for k in rep.HPARAMS}
  assert set(hp) == set(rep.HPARAMS) and isinstance(hp["lam"], float)
  config = rep.make_config(rep.plan("table5", ["WN18RR"], ["RotL"], ["ha-allneg"])[0], 0.5, 0)
  assert (config.loss, config.activation, config.dim, config.batch_size, config.lam,
          config.max_seconds) == ("allneg", "hanon", 32, int(flagged["batch_size"]),
                                  float(flagged["lam"]), 300.0)


def test_table5_tiny_then_cached(tmp_path):
  out = tmp_path / "t5"
  first = _run("--experiment=table5", *TINY, f"--outdir={out}")
  rows = _rows(out)
  assert [r["variant"] for r in rows] == TABLE5
  assert all(r["status"] == "trained" for r in rows)
  for r in rows:
    for key in ("test_mrr", "test_hits@10", "test_mrr_pess", "valid_mrr"):
      assert math.isfinite(float(r[key])), (key, r)
  table = (out / "table.md").read_text()
  assert all(f"| {v} |" in table for v in TABLE5)
  assert "trained" in first and "Table 5" in first
  # Same command again: every cell is reused, nothing is trained.
  again = _run("--experiment=table5", *TINY, f"--outdir={out}")
  progress = [line for line in again.splitlines() if line.startswith("[")]
  assert len(progress) == 6 and all(": cached," in line for line in progress), again
  assert "training in" not in again
  assert [r["test_mrr"] for r in _rows(out)] == [r["test_mrr"] for r in rows]
  # A narrower command keeps listing the cells the wider one finished, in the table's order.
  narrow = _run("--experiment=table5", *TINY, "--variants=ha-allneg,hale", f"--outdir={out}")
  progress = [line for line in narrow.splitlines() if line.startswith("[")]
  assert len(progress) == 2 and all(": cached," in line for line in progress), narrow
  kept = _rows(out)
  assert [r["variant"] for r in kept] == TABLE5
  assert [r["status"] for r in kept] == ["cached", "kept", "kept", "kept", "kept", "cached"]
  assert [r["test_mrr"] for r in kept] == [r["test_mrr"] for r in rows]
  table = (out / "table.md").read_text()
  assert all(f"| {v} |" in table for v in TABLE5) and table.count("| kept |") == 4, table
  assert "HaLE ahead in" in table and "of 5" in table, table


def test_fig2_activations_tiny_and_unavailable_dataset(tmp_path):
  cache = tmp_path / "cache"
  (cache / "CoDEx-L").mkdir(parents=True)  # incomplete: resolve() raises DataError, no download
  env = {k: v for k, v in os.environ.items() if k != "HALE_DATA_DIR"}
  env["HALE_CACHE_DIR"] = str(cache)
  out = tmp_path / "fig2"
  stdout = _run("--experiment=fig2_activations", "--datasets=CoDEx-L,synthetic", *TINY[1:],
                "--variants=hanon,arctanh", f"--outdir={out}", env=env)
  rows = _rows(out)
  assert [(r["dataset"], r["variant"], r["status"]) for r in rows] == [
      ("CoDEx-L", "Hanon", "not available"), ("CoDEx-L", "2Arctanh", "not available"),
      ("synthetic", "Hanon", "trained"), ("synthetic", "2Arctanh", "trained")]
  assert "lacks train.txt" in rows[0]["note"]
  assert all(math.isfinite(float(r["test_mrr"])) for r in rows[2:])
  assert (out / "results.json").exists()
  table = (out / "table.md").read_text()
  # both CoDEx-L cells point at one note that gives the reason once
  assert table.count("not available [1]") == 2 and "[2]" not in table, table
  assert table.count("lacks train.txt") == 1, table
  try:
    import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    assert "plots skipped" in stdout and "pip install matplotlib" in stdout
  pytest.importorskip("matplotlib")
  assert (out / "fig2_activations.png").stat().st_size > 0


def test_versus_hale_sets_each_variant_against_hale():
  rep = _module()

  def row(dataset, model, variant, mrr, paper):
    r = dict.fromkeys(rep.ROW_FIELDS)
    r.update(dataset=dataset, model=model, dim=32, variant=variant, test_mrr=mrr,
             paper_mrr=paper, status="trained", note="")
    return r

  rows = [row("WN18RR", "RotE", "SamNeg", 0.40, 0.355), row("WN18RR", "RotE", "HaLE", 0.45, 0.46),
          row("WN18RR", "RotL", "SamNeg", 0.45, 0.295), row("WN18RR", "RotL", "HaLE", 0.45, 0.471),
          row("WN18RR", "TransE", "SamNeg", 0.20, 0.177),                 # no HaLE cell: skipped
          row("FB15k-237", "RotE", "SamNeg", None, 0.246),                # not trained: skipped
          row("FB15k-237", "RotE", "HaLE", 0.30, 0.313)]
  lines = rep.versus_hale("table2", rows)
  body = [line for line in lines if line.startswith("| WN18RR") or line.startswith("| FB")]
  assert body == ["| WN18RR | RotE-32 | SamNeg | +0.050 | +0.105 | yes |",
                  "| WN18RR | RotL-32 | SamNeg | +0.000 | +0.176 | no |"]  # a tie is not a win
  assert lines[-1] == "HaLE ahead in 1 of 2 (the paper: 2 of 2)."
  assert rep.versus_hale("fig2_losses", rows) == []
  assert rep.versus_hale("table2", rows[4:6]) == []
  table = rep.markdown("table2", rows, 1.0)
  assert "HaLE ahead in 1 of 2" in table and "| WN18RR | RotE-32 | SamNeg | +0.050 |" in table


def test_hale_bias_is_opt_in_and_set_against_samneg():
  rep = _module()
  default = rep.plan("table2", ["WN18RR"], ["TransE"])
  assert [c.variant.key for c in default] == ["samneg", "hale"]  # not run unless named
  cell, = rep.plan("table2", ["WN18RR"], ["TransE"], ["hale-bias"])
  config = rep.make_config(cell, 1.0, 0)
  assert (config.loss, config.activation, config.bias) == ("hale", "hanon", "learn")
  assert cell.cell_id == "wn18rr-TransE-32d-hale-bias-s0"
  assert rep.paper_numbers("WN18RR", "TransE", 32, cell.variant) is None  # not in the paper
  with pytest.raises(ValueError, match="hale-bias"):  # table5 lacks it; the error lists choices
    rep.plan("table5", ["WN18RR"], ["RotL"], ["hale-bias", "nope"])

  def row(model, variant, mrr, paper=None):
    r = dict.fromkeys(rep.ROW_FIELDS)
    r.update(dataset="WN18RR", model=model, dim=32, variant=variant, test_mrr=mrr,
             paper_mrr=paper, status="trained", note="")
    return r

  rows = [row("TransE", "SamNeg", 0.2398, 0.177), row("TransE", "HaLE", 0.204, 0.212),
          row("TransE", "HaLE + tail biases", 0.2607),
          row("RotL", "SamNeg", 0.46, 0.295), row("RotL", "HaLE + tail biases", 0.4535),
          row("RotE", "HaLE + tail biases", 0.45)]                 # no SamNeg cell: skipped
  lines = rep.versus_hale("table2", rows)
  hale_body = [x for x in lines if x.startswith("| WN18RR") and "tail biases" not in x]
  assert hale_body == ["| WN18RR | TransE-32 | SamNeg | -0.036 | +0.035 | no |"]  # the
  # extension is never set against HaLE, and RotL has no HaLE cell
  ext = [x for x in lines if "tail biases |" in x]
  assert ext == ["| WN18RR | TransE-32 | HaLE + tail biases | SamNeg | +0.021 | yes |",
                 "| WN18RR | RotL-32 | HaLE + tail biases | SamNeg | -0.007 | no |"]
  assert "HaLE ahead in 0 of 1 (the paper: 1 of 1)." in lines
  assert lines[-1] == "Extension ahead in 1 of 2."


def test_hale_bias_tiny_run_keeps_its_cell(tmp_path):
  out = tmp_path / "t2"
  _run("--experiment=table2", *TINY, "--models=TransE", "--variants=samneg,hale-bias",
       f"--outdir={out}")
  rows = _rows(out)
  assert [(r["variant"], r["bias"], r["status"]) for r in rows] == [
      ("SamNeg", "auto", "trained"), ("HaLE + tail biases", "learn", "trained")]
  assert all(math.isfinite(float(r["test_mrr"])) for r in rows)
  # A later command without the opt-in variant still lists its finished cell.
  _run("--experiment=table2", *TINY, "--models=TransE", "--variants=samneg", f"--outdir={out}")
  assert [(r["variant"], r["status"]) for r in _rows(out)] == [
      ("SamNeg", "cached"), ("HaLE + tail biases", "kept")]
  assert "Extension ahead in" in (out / "table.md").read_text()
