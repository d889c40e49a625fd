"""benchmarks.reproduce: the paper's cells and numbers, settings from the flagfiles, the tables,
and a tiny end-to-end cell (trained, then cached, kept, and reused from the command line).

The end-to-end cell trains on the generated graph for one epoch at dimension 8 (a few seconds,
most of it compilation); the tests that need it are marked slow.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import paper_tables, reproduce
from benchmarks import reproduce_cells as cells_lib
from benchmarks import reproduce_report as report
from hale_jax import models, objective, options
from hale_jax.config import Config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--datasets=synthetic", "--max_epochs=1", "--budget_scale=0.001", "--dim_override=8"]


def _rows(outdir: Path) -> list[dict]:
  with open(outdir / "results.csv", newline="") as f:
    return list(csv.DictReader(f))


def _flagfile_text(name: str) -> dict[str, str]:
  text = (ROOT / "launch" / name).read_text()
  return dict(line[2:].split("=", 1) for line in text.split() if line.startswith("--"))


def test_cells_and_paper_numbers():
  exps = paper_tables.EXPERIMENTS
  counts = {e: len(cells_lib.plan(e, exps[e]["datasets"], exps[e]["models"])) for e in exps}
  assert counts == {"table2": 20, "table3": 30, "table5": 18, "fig2_losses": 15,
                    "fig2_activations": 15}
  for exp in ("table2", "table3", "table5"):  # the paper gives a number for each of these cells
    for cell in cells_lib.plan(exp, exps[exp]["datasets"], exps[exp]["models"]):
      paper = paper_tables.paper_numbers(cell.dataset, cell.model, cell.dim, cell.variant)
      assert paper is not None and len(paper) == 3, cell
      mrr, h10, h1 = paper
      assert 0 < h1 <= mrr <= h10 < 1, cell  # MRR lies between Hits@1 and Hits@10
  # Spot checks against the paper's tables.
  paper = paper_tables.PAPER
  assert paper[("WN18RR", "RotL", 32, "hale")] == (.471, .558, .424)      # Tables 2 and 5
  assert paper[("FB15k-237", "RotL", 32, "samneg")] == (.140, .266, .079)  # Table 2
  assert paper[("CoDEx-L", "RotL", 256, "samneg")] == (.055, .113, .026)   # Table 3
  assert paper[("CoDEx-M", "RotL", 32, "wo-possquare")] == (.241, .351, .185)  # Table 5
  # the models and the Fig. 2 strategies are the library's, not copies
  assert exps["table2"]["models"] == exps["table3"]["models"] == models.PAPER_MODELS
  assert not set(models.HYPERBOLIC_MODELS) & set(models.PAPER_MODELS)
  assert sorted(v.overrides["loss"] for v in paper_tables.VARIANTS["fig2_losses"]) == sorted(
      objective.PAPER_LOSSES)
  assert [v.label for v in paper_tables.VARIANTS["fig2_losses"]] == [
      "SamNeg", "AdvNeg", "AllNeg", "NonNeg", "HaLE"]


def test_settings_come_from_the_flagfiles():
  files = cells_lib.flagfiles()
  assert set(files) == {"WN18RR", "FB15k-237", "CoDEx-S", "CoDEx-M", "CoDEx-L", "Wikidata5M",
                        "ogbl-wikikg2"}
  for dataset, path in files.items():  # each flagfile keyed by its own --dataset
    assert _flagfile_text(path.name)["dataset"] == dataset
    assert cells_lib.budget_seconds(dataset) == float(_flagfile_text(path.name)["max_seconds"])
  assert cells_lib.budget_seconds("synthetic") == Config().budget.max_seconds
  assert cells_lib.hyperparameters("synthetic") == {}
  # every config field the flagfile sets, read here from its text, except the cell's own
  flagged = _flagfile_text("wn18rr.flags")
  hp = cells_lib.hyperparameters("WN18RR")
  kinds = {f.name: kind for _, f, kind in options.config_fields()}
  assert hp == {k: kinds[k](v) for k, v in flagged.items()
                if k in kinds and k not in cells_lib.CELL_FIELDS}
  assert "lam" in hp and "dim" not in hp and "model" not in hp
  cell = cells_lib.plan("table5", ["WN18RR"], ["RotL"], ["ha-allneg"])[0]
  flat = cells_lib.make_config(cell, 0.5, 0).flat()
  assert (flat["loss"], flat["activation"], flat["dim"], flat["batch_size"], flat["lam"],
          flat["max_seconds"]) == ("allneg", "hanon", 32, int(flagged["batch_size"]),
                                   float(flagged["lam"]), 0.5 * float(flagged["max_seconds"]))
  assert cells_lib.make_config(cells_lib.plan("table2", ["FB15k-237"], ["RotL"])[0], 1, 0
                               ).flat()["lse_chunk"] == int(_flagfile_text(
                                   "fb15k237.flags")["lse_chunk"])
  assert cells_lib.canonical_models(["rotl", "TRANSE"]) == ["RotL", "TransE"]
  assert cells_lib.canonical_dataset(" wn18rr ") == "WN18RR"
  with pytest.raises(ValueError, match="WN18RR"):  # the message lists the choices
    cells_lib.canonical_dataset("nope")
  with pytest.raises(ValueError, match="RotL"):
    cells_lib.canonical_models(["nope"])


def test_versus_hale_sets_each_variant_against_hale():
  def row(dataset, model, variant, mrr, paper):
    r = dict.fromkeys(report.ROW_FIELDS)
    r.update(dataset=dataset, model=model, dim=32, variant=variant, test_mrr=mrr,
             paper_mrr=paper, status="trained", note="")
    return r

  rows = [row("WN18RR", "RotE", "SamNeg", 0.40, 0.355), row("WN18RR", "RotE", "HaLE", 0.45, 0.46),
          row("WN18RR", "RotL", "SamNeg", 0.45, 0.295), row("WN18RR", "RotL", "HaLE", 0.45, 0.471),
          row("WN18RR", "TransE", "SamNeg", 0.20, 0.177),                 # no HaLE cell: skipped
          row("FB15k-237", "RotE", "SamNeg", None, 0.246),                # not trained: skipped
          row("FB15k-237", "RotE", "HaLE", 0.30, 0.313)]
  lines = report.versus_hale("table2", rows)
  body = [line for line in lines if line.startswith("| WN18RR") or line.startswith("| FB")]
  assert body == ["| WN18RR | RotE-32 | SamNeg | +0.050 | +0.105 | yes |",
                  "| WN18RR | RotL-32 | SamNeg | +0.000 | +0.176 | no |"]  # a tie is not a win
  assert lines[-1] == "HaLE ahead in 1 of 2 (the paper: 2 of 2)."
  assert report.versus_hale("fig2_losses", rows) == []
  assert report.versus_hale("table2", rows[4:6]) == []
  table = report.markdown("table2", rows, 1.0)
  assert "HaLE ahead in 1 of 2" in table and "| WN18RR | RotE-32 | SamNeg | +0.050 |" in table


def test_hale_bias_is_opt_in_and_set_against_samneg():
  default = cells_lib.plan("table2", ["WN18RR"], ["TransE"])
  assert [c.variant.key for c in default] == ["samneg", "hale"]  # not run unless named
  cell, = cells_lib.plan("table2", ["WN18RR"], ["TransE"], ["hale-bias"])
  flat = cells_lib.make_config(cell, 1.0, 0).flat()
  assert (flat["loss"], flat["activation"], flat["bias"]) == ("hale", "hanon", "learn")
  assert cell.cell_id == "wn18rr-TransE-32d-hale-bias-s0"
  assert paper_tables.paper_numbers("WN18RR", "TransE", 32, cell.variant) is None
  with pytest.raises(ValueError, match="hale-bias"):  # table5 lacks it; the error lists choices
    cells_lib.plan("table5", ["WN18RR"], ["RotL"], ["hale-bias", "nope"])

  def row(model, variant, mrr, paper=None):
    r = dict.fromkeys(report.ROW_FIELDS)
    r.update(dataset="WN18RR", model=model, dim=32, variant=variant, test_mrr=mrr,
             paper_mrr=paper, status="trained", note="")
    return r

  rows = [row("TransE", "SamNeg", 0.2398, 0.177), row("TransE", "HaLE", 0.204, 0.212),
          row("TransE", "HaLE + tail biases", 0.2607),
          row("RotL", "SamNeg", 0.46, 0.295), row("RotL", "HaLE + tail biases", 0.4535),
          row("RotE", "HaLE + tail biases", 0.45)]                 # no SamNeg cell: skipped
  lines = report.versus_hale("table2", rows)
  hale_body = [x for x in lines if x.startswith("| WN18RR") and "tail biases" not in x]
  assert hale_body == ["| WN18RR | TransE-32 | SamNeg | -0.036 | +0.035 | no |"]  # the
  # extension is never set against HaLE, and RotL has no HaLE cell
  ext = [x for x in lines if "tail biases |" in x]
  assert ext == ["| WN18RR | TransE-32 | HaLE + tail biases | SamNeg | +0.021 | yes |",
                 "| WN18RR | RotL-32 | HaLE + tail biases | SamNeg | -0.007 | no |"]
  assert "HaLE ahead in 0 of 1 (the paper: 1 of 1)." in lines
  assert lines[-1] == "Extension ahead in 1 of 2."


def test_unavailable_dataset_is_reported_once(tmp_path, monkeypatch, capsys):
  (tmp_path / "cache" / "CoDEx-L").mkdir(parents=True)  # incomplete: no download is tried
  monkeypatch.delenv("HALE_DATA_DIR", raising=False)
  monkeypatch.setenv("HALE_CACHE_DIR", str(tmp_path / "cache"))
  out = tmp_path / "fig2"
  cells = cells_lib.plan("fig2_activations", ["CoDEx-L"], ["RotE"], ["hanon", "arctanh"], 8)
  rows, errors = reproduce.run("fig2_activations", cells, out, 0.001, 1, None, [])
  assert errors == 0
  assert [(r["variant"], r["status"]) for r in rows] == [
      ("Hanon", "not available"), ("2Arctanh", "not available")]
  assert "lacks train.txt" in rows[0]["note"]
  assert [r["status"] for r in _rows(out)] == ["not available"] * 2
  assert (out / "results.json").exists()
  table = (out / "table.md").read_text()
  # both cells point at one note that gives the reason once
  assert table.count("not available [1]") == 2 and "[2]" not in table, table
  assert table.count("lacks train.txt") == 1, table
  assert "not available" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One tiny SamNeg cell on the generated graph, trained in this process."""
  out = tmp_path_factory.mktemp("t2")
  cells = cells_lib.plan("table2", ["synthetic"], ["TransE"], ["samneg"], 8)
  rows, errors = reproduce.run("table2", cells, out, 0.001, 1, None, ["test"])
  assert errors == 0
  return out, cells, rows


@pytest.mark.slow
def test_tiny_cell_trained_then_cached_and_kept(trained, capsys):
  out, cells, rows = trained
  (row,) = rows
  assert (row["variant"], row["status"], row["epochs"], row["dim"]) == ("SamNeg", "trained", 1, 8)
  for key in ("test_mrr", "test_hits@10", "test_mrr_pess", "valid_mrr"):
    assert math.isfinite(row[key]), (key, row)
  assert [r["status"] for r in _rows(out)] == ["trained"]
  assert "| synthetic | TransE-8 | SamNeg |" in (out / "table.md").read_text()
  capsys.readouterr()
  again, _ = reproduce.run("table2", cells, out, 0.001, 1, None, [])
  assert [r["status"] for r in again] == ["cached"] and again[0]["test_mrr"] == row["test_mrr"]
  assert "training in" not in capsys.readouterr().out
  # a command naming another cell of the experiment keeps listing the finished one
  other = cells_lib.plan("table2", ["synthetic"], ["TransE"], ["hale"], 8)
  order = reproduce.full_plan("table2", other)
  (kept,) = reproduce.kept_rows(order, other, out, 0.001, 1, None)
  assert (kept["variant"], kept["status"], kept["note"]) == ("SamNeg", "kept", "")
  (kept,) = reproduce.kept_rows(order, other, out, 0.001, 2, None)  # another budget: a note
  assert kept["note"].startswith("another budget: trained with")
  # the same cell on other data is a different run: not kept, and an error when named
  assert reproduce.kept_rows(order, other, out, 0.001, 1, str(out)) == []
  results, note = reproduce.stored_results(out / "cells" / cells[0].cell_id,
                                           cells_lib.make_config(cells[0], 0.001, 1),
                                           cells_lib.data_spec("synthetic", str(out)))
  assert results is None and "holds a different run" in note


@pytest.mark.slow
def test_command_reuses_the_cell(trained):
  out, _, rows = trained
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run([sys.executable, "-m", "benchmarks.reproduce", "--experiment=table2",
                         *TINY, "--models=TransE", "--variants=samneg", f"--outdir={out}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  progress = [line for line in proc.stdout.splitlines() if line.startswith("[")]
  assert len(progress) == 1 and ": cached," in progress[0], proc.stdout
  assert "Table 2" in proc.stdout and "1 cached in" in proc.stdout
  assert [float(r["test_mrr"]) for r in _rows(out)] == [rows[0]["test_mrr"]]
