"""Reloading a run: evaluate, export (npz, tsv), top-k prediction by name, and the three CLIs.

One trained run serves every test (module fixture); the command lines, each a process of its
own, are in the slow tier."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hale_jax import inference, rundir, synthetic, trained_model
from hale_jax.config import Config
from hale_jax.data import DataError, FilterIndex, load_folder
from hale_jax.ranking import Evaluator
from hale_jax.loop import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """One trained RotL run on a small graph stored as a dataset folder; returns the workdir."""
  root = tmp_path_factory.mktemp("inference")
  folder = root / "graph"
  folder.mkdir()
  graph = synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)
  for split in ("train", "valid", "test"):
    with open(folder / f"{split}.txt", "w", encoding="utf-8") as f:
      for h, r, t in graph.split(split):
        f.write(f"{graph.entities[h]}\t{graph.relations[r]}\t{graph.entities[t]}\n")
  data = load_folder(folder)
  config = Config.make(model="RotL", dim=16, batch_size=256, max_epochs=30, max_seconds=0,
                       eval_every=10, learning_rate=0.01)
  workdir = root / "run"
  spec = {"kind": "folder", "path": str(folder)}
  train(config, data, workdir, log=lambda s: None, data_spec=spec)
  run = rundir.read_run(workdir)
  assert run["data"] == {**spec, "strip_whitespace": False} and run["vocab_sha256"] == rundir.vocabulary_hash(data)
  return workdir


@pytest.fixture(scope="module")
def loaded(run_dir):
  return trained_model.load(run_dir)


def _results(run_dir):
  return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
def test_evaluate_reproduces_results_json(run_dir):
  results = _results(run_dir)
  assert trained_model.load(run_dir).evaluate("test") == results["metrics"]["test"]
  assert trained_model.load(run_dir).evaluate("valid", chunk=128)["realistic"]["mrr"] == pytest.approx(
      results["metrics"]["valid"]["realistic"]["mrr"], abs=1e-6)


@pytest.mark.slow
def test_export_npz_round_trips(run_dir, loaded, tmp_path):
  data, params = loaded.data, loaded.params
  out = inference.export_run(run_dir, "npz", tmp_path / "emb.npz")
  with np.load(out) as f:
    arrays = {k: f[k] for k in f.files}
  assert str(arrays["model"]) == "RotL" and int(arrays["dim"]) == 16
  assert list(arrays["entity_names"]) == list(data.entities)
  nr = data.num_relations
  assert list(arrays["relation_names"][:nr]) == list(data.relations)
  assert arrays["relation_names"][nr] == data.relations[0] + "_reverse"
  assert arrays["entity"].shape == (data.num_entities, 16)
  assert set(arrays) >= {"scale", "c_r", "translation", "rotation", "alpha"}
  np.testing.assert_allclose(arrays["c_r"], np.log1p(np.exp(arrays["scale"])), rtol=1e-5)
  tables = {k: v for k, v in arrays.items() if k not in inference.EXPORT_META_KEYS}
  assert set(tables) == set(params)
  metrics = Evaluator(data, "test", str(arrays["model"]))(tables)
  expected = _results(run_dir)["metrics"]["test"]
  for mode in ("realistic", "pessimistic", "optimistic"):
    assert metrics[mode]["mrr"] == expected[mode]["mrr"]
  with pytest.raises(FileExistsError, match="--overwrite"):
    inference.export_run(run_dir, "npz", out)
  inference.export_run(run_dir, "npz", out, overwrite=True)


def test_export_tsv(run_dir, loaded, tmp_path):
  data, params = loaded.data, loaded.params
  out = inference.export_run(run_dir, "tsv", tmp_path / "tsv")
  lines = (out / "entities.tsv").read_text(encoding="utf-8").splitlines()
  assert len(lines) == data.num_entities
  assert all(len(line.split("\t")) == 17 for line in lines)
  vocab = (run_dir / "entities.tsv").read_text(encoding="utf-8").splitlines()
  assert [line.split("\t")[0] for line in lines] == [v.split("\t")[1] for v in vocab]
  first = np.array(lines[0].split("\t")[1:], np.float32)
  np.testing.assert_array_equal(first, np.asarray(params["entity"][0]))
  names = sorted(p.name for p in out.iterdir())
  assert names == ["entities.tsv", "export.json", "relation_scale.tsv", "relations_alpha.tsv",
                   "relations_rotation.tsv", "relations_translation.tsv"]
  rot = (out / "relations_rotation.tsv").read_text(encoding="utf-8").splitlines()
  assert len(rot) == 2 * data.num_relations and len(rot[0].split("\t")) == 17
  scale = (out / "relation_scale.tsv").read_text(encoding="utf-8").splitlines()
  assert scale[data.num_relations].split("\t")[0] == data.relations[0] + "_reverse"
  assert float(scale[0].split("\t")[1]) > 0
  with pytest.raises(FileExistsError):
    inference.export_run(run_dir, "tsv", out)


def _sample(data, relation, n=20):
  r = data.relations.index(relation)
  triples = data.train[data.train[:, 1] == r]
  return triples[np.random.default_rng(0).choice(len(triples), n, replace=False)]


def _names(answers):
  return [(a.name, a.distance) for a in answers[0]]


@pytest.mark.slow
def test_top_k_tails_and_heads(loaded):
  data = loaded.data
  index = FilterIndex(data)
  nr = data.num_relations
  sample = _sample(data, "parent_of")
  tail_hits = head_hits = 0
  for h, r, t in sample:
    hn, tn = data.entities[h], data.entities[t]
    top = _names(loaded.predict_tails(hn, "parent_of", k=10, filtered=False))
    assert len(top) == 10 and [d for _, d in top] == sorted(d for _, d in top)
    tail_hits += tn in [n for n, _ in top]
    top = _names(loaded.predict_heads("parent_of", tn, k=10, filtered=False))
    head_hits += hn in [n for n, _ in top]
    # filtered: no known answer of the query survives
    _, known = index.answers(np.array([h]), np.array([r]))
    top = _names(loaded.predict_tails(hn, "parent_of", k=50))
    assert not {data.entities[i] for i in known} & {n for n, _ in top}
    _, known = index.answers(np.array([t]), np.array([r + nr]))
    top = _names(loaded.predict_heads("parent_of", tn, k=50))
    assert hn not in [n for n, _ in top] and not {data.entities[i] for i in known} & {
        n for n, _ in top}
  assert tail_hits >= 16, tail_hits
  assert head_hits >= 16, head_hits


def test_top_k_rejects_bad_queries(loaded):
  with pytest.raises(DataError, match="did you mean 'parent_of'"):
    loaded.predict_tails("t0", "parent_off")
  with pytest.raises(DataError, match="unknown entity 'nobody'"):
    loaded.predict_tails("nobody", "parent_of")
  with pytest.raises(DataError, match="unknown entity 'nobody'"):
    loaded.predict_heads("parent_of", "nobody")


def test_load_refuses_other_vocabulary_and_missing_spec(run_dir, tmp_path):
  other = tmp_path / "copy"
  shutil.copytree(run_dir, other)
  run = rundir.read_run(other)
  run["vocab_sha256"] = "0" * 64
  rundir.write_run(other, run)
  with pytest.raises(DataError, match="vocabularies do not match") as err:
    trained_model.load(other)
  assert "\n" not in str(err.value)
  (other / "run.json").unlink()
  with pytest.raises(FileNotFoundError, match="run.json"):
    trained_model.load(other)


def _cli(module, *args):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", f"hale_jax.{module}", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_evaluate(run_dir, tmp_path):
  out = tmp_path / "metrics.json"
  proc = _cli("evaluate", f"--workdir={run_dir}", f"--output={out}")
  assert proc.returncode == 0, proc.stderr
  rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()}
  expected = _results(run_dir)["metrics"]["test"]
  for mode in ("realistic", "pessimistic", "optimistic"):
    assert float(rows[mode][1]) == pytest.approx(expected[mode]["mrr"], abs=1e-4)
  assert json.loads(out.read_text())["metrics"] == expected


@pytest.mark.slow
def test_cli_predict(run_dir, loaded):
  expected = _names(loaded.predict_tails("t0", "parent_of", k=3))
  proc = _cli("predict", f"--workdir={run_dir}", "--relation=parent_of", "--head=t0", "--k=3")
  assert proc.returncode == 0, proc.stderr
  rows = [line.split() for line in proc.stdout.splitlines()[2:]]
  assert [(int(r[0]), r[1]) for r in rows] == [(i + 1, n) for i, (n, _) in enumerate(expected)]


@pytest.mark.slow
def test_cli_bad_workdir_is_one_line(tmp_path):
  proc = _cli("export", f"--workdir={tmp_path / 'nowhere'}", "--format=tsv")
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0]


@pytest.mark.slow
def test_self_rank_agrees_with_the_evaluator(run_dir):
  """benchmarks/self_rank.py's Hits@1 on a trained run equals the evaluator's optimistic
  Hits@1 (random floats do not tie).  Its NumPy brute-force checks (top-1 shares, relation
  geometry) live in tests/test_benchmarks_self_rank.py, on a run folder made by hand."""
  sys.path.insert(0, str(REPO / "benchmarks"))
  try:
    import self_rank  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  got = self_rank.top1_breakdown(str(run_dir), "test", chunk=64, min_queries=1)
  data = trained_model.load(run_dir).data
  assert got["queries"] == 2 * len(data.test)
  assert got["hits@1"] == pytest.approx(trained_model.load(run_dir).evaluate()["optimistic"]["hits@1"])
  assert sum(n for n, _, _ in got["relations"].values()) == got["queries"]


def test_malformed_query_line_names_file_and_line(tmp_path):
  path = tmp_path / "queries.tsv"
  path.write_text("# a comment\nt0\tparent_of\t?\n\n?\tparent_of\tt0.1\n"
                  "t0\tparent_of\tt0.1\n", encoding="utf-8")
  with pytest.raises(DataError) as err:
    inference.parse_queries(path)
  assert str(err.value).startswith(f"{path}:5: expected head<TAB>relation<TAB>?")
  for bad in ("?\tparent_of\t?", "t0\t?\tt1", "t0 parent_of ?", "t0\tparent_of\t?\textra"):
    path.write_text(f"t0\tparent_of\t?\n{bad}\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{path.name}:2: "):
      inference.parse_queries(path)
  path.write_text("\ufefft0\tparent_of\t?\n?\tsibling_of\tt1.0\n", encoding="utf-8")
  assert inference.parse_queries(path) == [("t0", "parent_of", "?"), ("?", "sibling_of", "t1.0")]


@pytest.mark.slow
def test_answer_queries_keeps_the_order_of_both_slot_kinds(fake_model):
  queries = [("?", "sibling_of", "t1.0"), ("t0", "parent_of", "?"), ("?", "has child", "t0.1"),
             ("Root One", "at_level", "?")]
  answers = inference.answer_queries(fake_model, queries, k=3)
  alone = [fake_model.predict_heads("sibling_of", "t1.0", 3)[0],
           fake_model.predict_tails("t0", "parent_of", 3)[0],
           fake_model.predict_heads("parent_of", "t0.1", 3)[0],
           fake_model.predict_tails("t1", "at_level", 3)[0]]
  for got, want in zip(answers, alone, strict=True):
    # Distances may differ in the last bit between batch sizes (compiled per shape).
    assert [(a.name, a.label) for a in got] == [(a.name, a.label) for a in want]
    assert [a.distance for a in got] == pytest.approx([a.distance for a in want], rel=1e-6)
