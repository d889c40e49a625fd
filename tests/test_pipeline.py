"""``hale_jax.train``: the launcher's settings from Python, the same run folder and numbers as
the command line, a resume on a second call, and one clear error for a wrong setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags

import hale_jax
from hale_jax import dataspec, options, pipeline, synthetic
from hale_jax.config import Config
import types
import datetime

from tests import helpers

REPO = Path(__file__).resolve().parents[1]


def _quiet(line):
  del line


def _write_tiny(folder: Path) -> None:
  folder.mkdir()
  g = synthetic.generate(seed=2, num_trees=1, branching=2, depth=3)
  for s in ("train", "valid", "test"):
    (folder / f"{s}.txt").write_text("".join(
        f"{g.entities[h]}\t{g.relations[r]}\t{g.entities[t]}\n" for h, r, t in g.split(s)))


def _from_argv(*argv: str):
  """The config and data spec the launcher builds from these flags."""
  fv = flags.FlagValues()
  options.define_config_flags(fv)
  options.define_launch_flags(fv)
  fv(["hale_jax", *argv])
  return options.config_from_flags(fv), options.data_spec_from_flags(fv)


def test_settings_give_the_launchers_config_and_data(tmp_path):
  _write_tiny(tmp_path / "tiny")
  got = pipeline.resolve(None, None, {"model": "RotE", "dim": 12, "lam": 0.5,
                                      "data_dir": tmp_path / "tiny", "max_seconds": 30})
  assert got == _from_argv("--model=RotE", "--dim=12", "--lam=0.5",
                           f"--data_dir={tmp_path / 'tiny'}", "--max_seconds=30")
  base = Config.make(model="RotL", dim=24, patience=3)
  config, spec = pipeline.resolve(base, "WN18RR", {"dim": 16})
  assert config == base.replace(dim=16) and spec == dataspec.Dataset("WN18RR")
  assert pipeline.resolve(None, None, {})[1] == dataspec.Synthetic()


def test_data_given_as_a_path_or_object(tmp_path):
  _write_tiny(tmp_path / "tiny")
  assert pipeline.resolve(None, tmp_path / "tiny", {})[1] == dataspec.Folder(
      str((tmp_path / "tiny").resolve()), False)
  one = tmp_path / "all.tsv"
  one.write_text((tmp_path / "tiny" / "train.txt").read_text())
  _, spec = pipeline.resolve(None, str(one), {"split": "0.6,0.2,0.2", "split_seed": 3})
  assert spec == _from_argv(f"--data_file={one}", "--split=0.6,0.2,0.2", "--split_seed=3")[1]
  kg = synthetic.generate(seed=2, num_trees=1, branching=2, depth=3)
  assert pipeline.resolve(None, kg, {"dim": 8})[1] is kg


@pytest.mark.parametrize("settings, message", [
    ({"modle": "RotL"}, r"unknown setting 'modle'; did you mean model\?"),
    ({"learning_rat": 0.1}, r"did you mean learning_rate"),
    ({"zzz": 1}, r"unknown setting 'zzz' \(the settings are the launcher's flags"),
    ({"dim": "many"}, r"dim='many': invalid literal"),
    ({"model": "RotX"}, r"model='RotX': value should be one of"),
    ({"header": 3}, r"header=3"),
    ({"dim": None}, r"dim=None: give a value"),
    ({"num_processes": 2}, r"multi-host run: use python -m hale_jax.launch"),
    ({"dim": 0}, r"dim"),
])
def test_a_wrong_setting_is_one_clear_error(settings, message):
  with pytest.raises(ValueError, match=message):
    pipeline.resolve(None, None, settings)


def test_data_is_given_once(tmp_path):
  with pytest.raises(ValueError, match="give the data once: data= or dataset="):
    hale_jax.train(data="synthetic", dataset="WN18RR", workdir=tmp_path / "r", log=_quiet)
  with pytest.raises(TypeError, match="data= takes"):
    pipeline.resolve(None, 3, {})
  assert not (tmp_path / "r").exists()


def test_every_launcher_data_flag_is_a_setting():
  names = pipeline.setting_names()
  assert {"dataset", "data_dir", "data_file", "split", "split_seed", "columns", "delimiter",
          "header", "train_file", "strip_whitespace", "model", "dim", "max_seconds"} <= set(names)
  assert not {"workdir", "overwrite", "coordinator_address", "distributed"} & set(names)


@pytest.mark.slow
def test_train_writes_the_launchers_run_folder_and_resumes(tmp_path):
  """The same settings through ``hale_jax.train`` and the launcher: the same files and
  numbers; a second call on the finished folder returns it without training."""
  data = tmp_path / "tiny"
  _write_tiny(data)
  lines: list[str] = []
  model = hale_jax.train(data_dir=data, dim=8, batch_size=32, max_epochs=2, max_seconds=0,
                         workdir=tmp_path / "py", log=lines.append)
  assert isinstance(model, hale_jax.TrainedModel)
  env = dict(os.environ, PYTHONPATH=str(REPO))
  cli = subprocess.run([sys.executable, "-m", "hale_jax.launch", f"--data_dir={data}",
                        "--dim=8", "--batch_size=32", "--max_epochs=2", "--max_seconds=0",
                        f"--workdir={tmp_path / 'cli'}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert cli.returncode == 0, cli.stderr
  py_results = json.loads((tmp_path / "py" / "results.json").read_text())
  cli_results = json.loads((tmp_path / "cli" / "results.json").read_text())
  assert py_results["metrics"] == cli_results["metrics"]
  assert py_results["run"]["settings"]["data_dir"] == str(data)
  for name in ("run.json", "metrics.jsonl", "best_params.npz", "entities.tsv", "checkpoints"):
    assert (tmp_path / "py" / name).exists(), name
  run_py, run_cli = (json.loads((tmp_path / d / "run.json").read_text()) for d in ("py", "cli"))
  assert run_py["config"] == run_cli["config"] and run_py["data"] == run_cli["data"]
  assert model.evaluate("test") == py_results["metrics"]["test"]
  strip = lambda ls: [l for l in "\n".join(ls).splitlines() if "workdir" not in l and "triples/s" not in l
                      and "compiled in" not in l and "results written" not in l]
  assert strip(lines) == strip(cli.stdout.splitlines())
  assert any(l.startswith("device: ") and "{" not in l for l in lines), lines

  again: list[str] = []
  model2 = hale_jax.train(data_dir=data, dim=8, batch_size=32, max_epochs=2, max_seconds=0,
                          workdir=tmp_path / "py", log=again.append)
  assert any("this run already finished" in l for l in again), again
  assert model2.evaluate("test") == py_results["metrics"]["test"]
  longer: list[str] = []
  hale_jax.train(data_dir=data, dim=8, batch_size=32, max_epochs=3, max_seconds=0,
                 workdir=tmp_path / "py", log=longer.append)
  assert any(l.startswith("resumed from ") for l in longer), longer
  assert json.loads((tmp_path / "py" / "results.json").read_text())["metrics"]["epochs"] == 3


def test_the_device_is_one_phrase():
  from hale_jax import rundir  # pylint: disable=import-outside-toplevel
  assert rundir.device_phrase({"platform": "cpu", "kind": "cpu", "count": 1}) == "1 cpu"
  assert rundir.device_phrase({"platform": "gpu", "kind": "NVIDIA H100 80GB HBM3",
                               "count": 8}) == "8 NVIDIA H100 80GB HBM3 (gpu)"


def test_default_workdir_names_in_the_same_second_differ(monkeypatch, tmp_path):
  from hale_jax import pipeline  # pylint: disable=import-outside-toplevel

  class Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
      return cls(2026, 12, 1, 6, 0, 0)

  monkeypatch.setattr(pipeline, "datetime", types.SimpleNamespace(datetime=Frozen))
  monkeypatch.chdir(tmp_path)
  config = Config.make(**helpers.RUN, max_epochs=1)
  made = [pipeline.default_workdir("tiny", config) for _ in range(3)]
  base = Path("runs") / "tiny-RotL-8d-20261201-060000"
  assert made == [base, base.with_name(base.name + "-2"), base.with_name(base.name + "-3")]
  assert all((tmp_path / p).is_dir() for p in made)
