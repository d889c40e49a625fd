"""A run with ``--eval_protocol=ogb`` end to end on a tiny ogbl-wikikg2 archive: installed from
a fake download, trained, its results reproduced from the run folder alone (Python and the
evaluate command) and equal to OGB's formula on the trained model's scores."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hale_jax
from hale_jax import dataspec, datasets, download, runfiles, synthetic
from hale_jax.config import Config
from hale_jax.data import DataError
from hale_jax.loop import train
from ogb_files import ENTITY_IDS, ogb_splits, ogb_zip
from test_ogb_eval import ogb_metrics, reference_scores

REPO = Path(__file__).resolve().parents[1]
RUN = dict(model="TransE", dim=8, batch_size=16, max_seconds=0, learning_rate=0.02,
           max_epochs=3, eval_every=1, eval_protocol="ogb")


class _Response(io.BytesIO):
  headers: dict = {}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """A cache holding ogbl-wikikg2, installed from a tiny archive through a fake opener."""
  cache = tmp_path_factory.mktemp("ogb-cache")
  archive = ogb_zip(ogb_splits(np.random.default_rng(7)))
  url = datasets.SOURCES["ogbl-wikikg2"].url
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(download, "_open", lambda u, timeout: _Response(archive if u == url else b""))
    datasets.resolve("ogbl-wikikg2", cache_dir=cache)
  return cache


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ogb-run") / "run"
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("HALE_CACHE_DIR", str(cache))
    mp.delenv("HALE_DATA_DIR", raising=False)
    spec = dataspec.Dataset("ogbl-wikikg2")
    data = spec.load()
    lines = []
    results = train(Config.make(**RUN), data, workdir, log=lines.append, data_spec=spec)
  return workdir, data, results, lines


@pytest.mark.slow
def test_results_say_the_protocol_and_the_folder_keeps_the_negatives(run):
  workdir, data, results, lines = run
  assert data.entities == tuple(ENTITY_IDS) and data.negatives["test"].shape[1:] == (2, 6)
  assert results["metrics"]["protocol"] == "ogb"
  assert results["metrics"]["ranking"].startswith("ogb: each valid/test triple against")
  assert results["config"]["eval_protocol"] == "ogb"
  assert any(line.startswith("test (realistic ties, OGB protocol): MRR") for line in lines)
  assert any("given negatives: 6 head and as many tail" in line for line in lines)
  for split in ("valid", "test"):
    kept = np.load(workdir / runfiles.NEGATIVES / f"{split}.npy")
    np.testing.assert_array_equal(kept, data.negatives[split])
  run_json = json.loads((workdir / runfiles.RUN).read_text())
  assert "test_negatives.npy" in run_json["data_sha256"]


@pytest.mark.slow
def test_the_folder_alone_reproduces_the_results_and_ogbs_formula(run, tmp_path):
  workdir, data, results, _ = run
  copy = tmp_path / "elsewhere"
  shutil.copytree(workdir, copy)  # no dataset, no cache, no network: the folder alone
  model = hale_jax.load(copy)
  assert model.protocol == "ogb"
  for split in ("valid", "test"):
    assert model.evaluate(split) == results["metrics"][split]
  pos, neg = reference_scores("TransE", model.arrays(), model.data, "test")
  for key, value in ogb_metrics(pos, neg).items():
    assert results["metrics"]["test"]["realistic"][key] == pytest.approx(value, rel=1e-12)
  filtered = model.evaluate("test", protocol="filtered")  # full ranking is there too
  assert filtered["realistic"]["mr"] >= 1 and filtered != results["metrics"]["test"]


@pytest.mark.slow
def test_the_evaluate_command_uses_the_runs_protocol(run, tmp_path):
  workdir, _, results, _ = run
  out = tmp_path / "metrics.json"
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  proc = subprocess.run([sys.executable, "-m", "hale_jax.evaluate", f"--workdir={workdir}",
                         f"--output={out}"], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "OGB protocol (given negatives) of test" in proc.stdout
  doc = json.loads(out.read_text())
  assert doc["protocol"] == "ogb" and doc["metrics"] == results["metrics"]["test"]


@pytest.mark.slow
def test_damaged_negatives_in_the_run_folder_are_one_line(run, tmp_path):
  copy = tmp_path / "damaged"
  shutil.copytree(run[0], copy)
  neg = np.load(copy / runfiles.NEGATIVES / "test.npy")
  np.save(copy / runfiles.NEGATIVES / "test.npy", neg[:, :, :0])
  with pytest.raises(DataError, match=r"negatives/test.npy: the test negatives have shape "
                                      r"\(\d+, 2, 0\)") as err:
    hale_jax.load(copy)
  assert "\n" not in str(err.value)
  (copy / runfiles.NEGATIVES / "test.npy").unlink()
  with pytest.raises(DataError, match="the test negatives cannot be read"):
    hale_jax.load(copy)
  shutil.rmtree(copy / runfiles.NEGATIVES)
  with pytest.raises(DataError, match="negatives: missing, but the run ranks by the OGB"):
    hale_jax.load(copy)


def test_the_protocol_without_negatives_is_refused_before_the_workdir(tmp_path):
  workdir = tmp_path / "never"
  with pytest.raises(ValueError, match="synthetic ships none"):
    train(Config.make(**RUN), synthetic.generate(), workdir, log=lambda line: None)
  assert not workdir.exists()
