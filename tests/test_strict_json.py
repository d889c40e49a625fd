"""Strict JSON everywhere: every ``.json`` and ``.jsonl`` file that a training run,
a sweep, ``evaluate --output`` and ``predict --format=json`` write parses with
``json.loads(text, parse_constant=<raise>)``, i.e. holds no ``NaN`` or ``Infinity``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from hale_jax import runfiles, synthetic, tracking
from hale_jax.callbacks import Validation

from benchmarks import faults
from tests import helpers

REPO = Path(__file__).resolve().parents[1]


def test_strict_json_refuses_constants():
  for text in ("NaN", '{"loss": NaN}', "[Infinity]", '{"x": -Infinity}'):
    with pytest.raises(ValueError, match="non-standard JSON constant"):
      faults.strict_json(text)
  assert faults.strict_json('{"loss": "nan", "x": 1e308}') == {"loss": "nan", "x": 1e308}


def test_write_json_refuses_non_finite_and_leaves_nothing(tmp_path):
  path = tmp_path / "results.json"
  runfiles.write_json(path, {"mrr": 0.5})
  with pytest.raises(ValueError):
    runfiles.write_json(path, {"mrr": math.nan})
  with pytest.raises(ValueError):
    runfiles.write_json(path, {"mrr": [math.inf]})
  assert faults.strict_json(path.read_text()) == {"mrr": 0.5}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_metrics_file_refuses_a_nan_record(tmp_path):
  metrics = {mode: {"mrr": 0.5} for mode in ("realistic", "pessimistic", "optimistic")}
  v = Validation(epoch=1, step=1, train_seconds=1.0, eval_seconds=0.1, loss=math.nan,
                 learning_rate=0.01, triples_per_second=1.0, metrics=metrics, best=metrics[
                     "realistic"], best_epoch=1, improved=True, params=None, max_seconds=0.0,
                 max_epochs=2)
  with pytest.raises(ValueError):
    tracking.MetricsFile(tmp_path).on_validation(v)
  text = (tmp_path / runfiles.METRICS).read_text() if (
      tmp_path / runfiles.METRICS).exists() else ""
  assert "NaN" not in text


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
  """A one-trial sweep (a training run, its results, curve and metrics.jsonl, the study), then
  at the same time ``evaluate --output`` and ``predict --format=json`` on the trial's run
  folder.  (A diverged run's files: test_reliability.py.)"""
  base = tmp_path_factory.mktemp("strict")
  data_dir = faults.write_folder(synthetic.generate(seed=0, num_trees=2, branching=3, depth=3),
                                 base / "tiny", {"child_of": "parent_of_reverse"})
  env = faults.launcher_env(helpers.compile_cache_dir(tmp_path_factory))
  common = [f"--data_dir={data_dir}", "--dim=8", "--batch_size=64", "--max_seconds=0",
            "--max_epochs=2", "--eval_every=1", "--learning_rate=0.01"]
  space = base / "space.json"
  space.write_text(json.dumps({"lam": {"type": "categorical", "choices": [0.3]}}))

  def start(module, *args):
    return subprocess.Popen([sys.executable, "-m", f"hale_jax.{module}", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  sweep = start("sweep", f"--study_dir={base / 'study'}", f"--space={space}", "--trials=1",
                *common)
  codes = {"sweep": (sweep.returncode, *sweep.communicate(timeout=600))}
  codes["sweep"] = (sweep.returncode, *codes["sweep"][1:])
  trial = base / "study" / "trial_0000"
  queries = base / "queries.tsv"
  queries.write_text("t0\tparent_of\t?\n?\tparent_of_reverse\tt0.1\n")
  procs = dict(
      evaluate=start("evaluate", f"--workdir={trial}", "--breakdown=direction",
                     f"--output={base / 'evaluate.json'}"),
      predict=start("predict", f"--workdir={trial}", f"--queries={queries}", "--format=json",
                    f"--output={base / 'predict.json'}"))
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=600)
    codes[name] = (proc.returncode, out, err)
  return base, codes


@pytest.mark.slow
def test_every_json_file_written_is_strict(outputs):
  base, codes = outputs
  for name, want in (("sweep", 0), ("evaluate", 0), ("predict", 0)):
    assert codes[name][0] == want, (name, codes[name][2])
  written = sorted(p for p in base.rglob("*") if p.suffix in (".json", ".jsonl"))
  names = {p.relative_to(base).as_posix() for p in written}
  assert {"study/trial_0000/run.json", "study/trial_0000/results.json",
          "study/trial_0000/metrics.jsonl", "evaluate.json",
          "predict.json", "space.json"} <= names, names
  for path in written:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
      records = [faults.strict_json(line) for line in text.splitlines()]
      assert records, path
    else:
      faults.strict_json(text)
  doc = faults.strict_json((base / "evaluate.json").read_text())
  assert doc["breakdown"]["by"] == "direction" and set(doc["breakdown"]["groups"]) == \
      {"tail", "head"}
  answers = faults.strict_json((base / "predict.json").read_text())
  assert len(answers) == 2 and all(a["answers"] for a in answers)
