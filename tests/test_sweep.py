"""``python -m hale_jax.sweep``: the search space file, stale trials, and a small study end to
end (three 2-epoch trials on the tiny generated graph, its report, ``best.flags`` and
``study.png``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from hale_jax import config as config_lib  # noqa: E402
from hale_jax import dataspec, options, rundir, sweep, synthetic  # noqa: E402
from hale_jax.rundir import WorkdirLock  # noqa: E402

from benchmarks import faults  # noqa: E402
from tests import helpers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPACE = {"learning_rate": {"type": "float", "low": 0.002, "high": 0.05, "log": True},
         "batch_size": {"type": "categorical", "choices": [64]}}


# ------------------------------------------------------------------------------ quick

@pytest.mark.parametrize("content, message", [
    ({"lam": {"type": "float", "low": 0.1, "high": 2.0}, "lamda": {"type": "float", "low": 0.1,
                                                                   "high": 1.0}},
     "unknown parameter 'lamda'"),
    ({"lam": {"type": "gaussian", "low": 0.1, "high": 2.0}}, "parameter 'lam' needs type float"),
    ({"lam": {"type": "float", "low": 0.1}}, "parameter 'lam' needs type float"),
    ({"batch_size": {"type": "categorical"}}, "parameter 'batch_size' needs type float"),
    ({"lam": 0.3}, "parameter 'lam' needs type float"),
    ({}, "expected a JSON object"),
    ([["lam", 0.3]], "expected a JSON object"),
    ("{not json", "cannot be read as JSON"),
])
def test_bad_space_is_one_line(tmp_path, content, message):
  path = tmp_path / "space.json"
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  with pytest.raises(ValueError) as err:
    sweep.parse_space(path)
  msg = str(err.value)
  assert "\n" not in msg and msg.startswith(f"--space {path}: ") and message in msg, msg


def test_space_parses_and_suggests(tmp_path):
  path = tmp_path / "space.json"
  space = {**SPACE, "num_negatives": {"type": "int", "low": 64, "high": 512, "step": 64}}
  path.write_text(json.dumps(space))
  assert sweep.parse_space(path) == space
  with pytest.raises(ValueError, match="cannot be read"):
    sweep.parse_space(tmp_path / "missing.json")


def test_new_study_starts_with_the_flagfiles_own_values():
  import optuna  # pylint: disable=import-outside-toplevel
  space = {"lam": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
           "bias": {"type": "categorical", "choices": ["none", "learn"]},
           "gamma": {"type": "int", "low": 4, "high": 16}}
  base = config_lib.Config.make(lam=0.7, bias="learn", gamma=12)
  study = optuna.create_study(direction="maximize")
  said = sweep.enqueue_baseline(study, base, space)
  assert said.startswith("trial 0 is the flagfile's own setting")
  trial = study.ask()
  assert sweep.suggest(trial, space) == {"lam": 0.7, "bias": "learn", "gamma": 12}
  study.tell(trial, 0.5)
  assert sweep.enqueue_baseline(study, base, space) == ""  # only a new study gets one
  # a value outside the space is left to the sampler, and the line names it
  other = config_lib.Config.make(lam=0.7, bias="learn", gamma=20)
  assert sweep.baseline_values(other, space) == ({"lam": 0.7, "bias": "learn"}, {"gamma": 20})
  fresh = optuna.create_study(direction="maximize")
  said = sweep.enqueue_baseline(fresh, other, space)
  assert said.endswith("outside the space: gamma (flagfile 20)"), said
  drawn = sweep.suggest(fresh.ask(), space)
  assert drawn["lam"] == 0.7 and drawn["bias"] == "learn" and 4 <= drawn["gamma"] <= 16
  nothing = config_lib.Config.make(lam=3.0, bias="learn", gamma=20)
  empty = optuna.create_study(direction="maximize")
  space_without_bias = {k: v for k, v in space.items() if k != "bias"}
  assert sweep.enqueue_baseline(empty, nothing, space_without_bias).startswith("no baseline")
  assert not empty.get_trials()


@pytest.mark.parametrize("from_epoch", [1, 3])
def test_median_pruner_judges_from_the_given_epoch(tmp_path, from_epoch):
  study = sweep.open_study(tmp_path, "median", from_epoch)
  for _ in range(2):  # two finished trials at valid MRR 0.4 every epoch
    done = study.ask()
    for epoch in range(1, 7):
      done.report(0.4, step=epoch)
    study.tell(done, 0.4)
  slow = study.ask()
  verdicts = []
  for epoch in range(1, 7):
    slow.report(0.01, step=epoch)
    verdicts.append(slow.should_prune())
  assert verdicts == [epoch >= from_epoch for epoch in range(1, 7)]


def test_stale_running_trial_is_failed_and_retried(tmp_path, monkeypatch):
  """A trial left RUNNING by a killed worker (its folder unlocked) is marked failed and its
  values are asked again; a live trial (folder locked) and a fresh one are left alone."""
  import optuna  # pylint: disable=import-outside-toplevel
  study = sweep.open_study(tmp_path, "none")
  states = optuna.trial.TrialState
  killed = study.ask()
  values = sweep.suggest(killed, SPACE)
  (tmp_path / "trial_0000").mkdir()  # the killed worker's run folder, lock released
  live = study.ask()
  sweep.suggest(live, SPACE)
  live_dir = tmp_path / "trial_0001"
  live_dir.mkdir()
  assert sweep.retry_stale_trials(study, tmp_path) == 0  # too recent to be stale
  monkeypatch.setattr(sweep, "STALE_AFTER_SECONDS", 0)
  time.sleep(0.01)
  with WorkdirLock(live_dir):
    assert sweep.retry_stale_trials(study, tmp_path) == 1
  trials = study.get_trials(deepcopy=False)
  assert [t.state for t in trials] == [states.FAIL, states.RUNNING, states.WAITING]
  retry = study.ask()
  assert retry.number == 2 and sweep.suggest(retry, SPACE) == values
  study.tell(retry, 0.5)
  assert sweep.finished_trials(study) == 1
  assert "| 0 | fail |" in sweep.trials_table(study)


# ------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def study(tmp_path_factory):
  base = tmp_path_factory.mktemp("sweep")
  data_dir = faults.write_folder(synthetic.generate(seed=0, num_trees=2, branching=3, depth=3),
                                 base / "tiny", {"child_of": "parent_of_reverse"})
  flagfile = base / "tiny.flags"
  flagfile.write_text(f"--data_dir={data_dir}\n--dim=8\n--batch_size=64\n--max_seconds=0\n"
                      f"--max_epochs=5\n--eval_every=1\n--learning_rate=0.01\n")
  space = base / "space.json"
  space.write_text(json.dumps(SPACE))
  study_dir = base / "study"
  env = faults.launcher_env(helpers.compile_cache_dir(tmp_path_factory))
  proc = subprocess.run(
      [sys.executable, "-m", "hale_jax.sweep", f"--study_dir={study_dir}",
       f"--flagfile={flagfile}", f"--space={space}", "--trials=3", "--max_epochs_per_trial=2"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  return study_dir, data_dir, proc


@pytest.mark.slow
def test_study_finishes_with_report_flagfile_and_plot(study):
  study_dir, data_dir, proc = study
  assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr
  done = [l for l in proc.stdout.splitlines() if re.match(r"trial \d+: ", l)]
  assert len(done) == 3 and all("valid MRR" in l for l in done), proc.stdout
  assert proc.stdout.startswith("trial 0 is the flagfile's own setting: ")
  assert done[0].startswith("trial 0: valid MRR ") and "'batch_size': 64" in done[0]
  table = [l for l in proc.stdout.splitlines() if l.startswith("| ") and l[2].isdigit()]
  assert len(table) == 3 and all("| complete |" in l or "| pruned |" in l for l in table)
  for n in range(3):
    trial = study_dir / f"trial_{n:04d}"
    results = faults.strict_json((trial / "results.json").read_text())
    assert results["metrics"]["epochs"] <= 2 and results["config"]["dim"] == 8
    assert "stopped after" in (trial / "log.txt").read_text()
  assert (study_dir / "study.db").is_file()
  png = study_dir / "study.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  best = study_dir / "best.flags"
  text = best.read_text()
  assert text.startswith("# hale_jax sweep: best of 3 trials, valid MRR ")
  fv = options.parse_flagfile(str(best))  # what python -m hale_jax.launch --flagfile reads
  config = options.config_from_flags(fv)
  assert fv["data_dir"].value == str(data_dir)
  names = [l.split("=")[0] for l in text.splitlines()[1:]]
  assert len(names) == len(set(names)), text  # each flag once
  assert "--max_epochs=5" in text.splitlines()  # the flagfile's budget, not the trials' 2
  assert f"--flagfile={best}" in proc.stdout
  assert config.budget.max_epochs == 5 and config.model.dim == 8
  assert config.optim.batch_size == 64 and config.budget.max_seconds == 0
  import optuna  # pylint: disable=import-outside-toplevel
  loaded = optuna.load_study(study_name=sweep.STUDY_NAME, storage=f"sqlite:///{study_dir}/study.db")
  assert config.optim.learning_rate == loaded.best_trial.params["learning_rate"]
  assert options.data_spec_from_flags(fv) == dataspec.Folder(str(data_dir))
  assert rundir.read_run(study_dir / f"trial_{loaded.best_trial.number:04d}")["config"][
      "learning_rate"] == config.optim.learning_rate


@pytest.mark.slow
def test_trial_budget_alone_is_a_budget(study, tmp_path_factory):
  study_dir, data_dir, _ = study
  flagfile = study_dir.parent / "no-budget.flags"
  flagfile.write_text(f"--data_dir={data_dir}\n--dim=8\n--batch_size=64\n--max_seconds=0\n")
  space = study_dir.parent / "space.json"
  proc = subprocess.run(
      [sys.executable, "-m", "hale_jax.sweep", f"--study_dir={study_dir.parent / 'other'}",
       f"--flagfile={flagfile}", f"--space={space}", "--trials=0", "--max_epochs_per_trial=2"],
      cwd=REPO, env=faults.launcher_env(helpers.compile_cache_dir(tmp_path_factory)),
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
