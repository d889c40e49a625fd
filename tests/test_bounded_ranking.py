"""Ranking and prediction whatever the number of queries: the evaluator's calls (a few chunks
each, arrays built when due), its CPU chunk cap and progress lines; a run's predictions
against the dense ranking; the fake run folder of benchmarks/fake_run.py; the predict command
on a queries file, with progress."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hale_jax
from hale_jax import inference, progress, ranking, synthetic, topk
from hale_jax.data import FilterIndex
from hale_jax.ranking import Evaluator
from tests.reference import random_params

from benchmarks import fake_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph():
  return synthetic.power_law(61, 6.0, 3, held_out=40, seed=5)


def _quiet(line):
  del line


def test_evaluator_in_several_calls_gives_the_same_ranks(graph, rng, monkeypatch):
  params = random_params(rng, "RotL", graph.num_entities, graph.num_relations, 6, 0.5)
  index = FilterIndex(graph)
  lines = []
  one = Evaluator(graph, "test", "RotL", 4, index, log=lines.append)
  assert one._plan.calls == 1  # pylint: disable=protected-access
  want = one.ranks(params)
  assert lines == []  # a short ranking says nothing
  monkeypatch.setattr(ranking, "CALL_DISTANCES", 2 * 4 * graph.num_entities)
  monkeypatch.setattr(ranking, "KEEP_BYTES", 0)  # arrays built when due
  many = Evaluator(graph, "test", "RotL", 4, index, log=lines.append, progress_every=0.0)
  plan = many._plan  # pylint: disable=protected-access
  assert plan.per_call == 2 and plan.calls == 10 and many._kept is None  # noqa: SLF001
  for _ in range(2):
    got = many.ranks(params)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
  assert len(lines) == 2 * plan.calls, lines
  assert lines[0].startswith("ranking test: 8/80 queries (10%), ") and "ETA" in lines[0]
  assert lines[plan.calls - 1].startswith("ranking test: 80/80 queries (100%) in ")


def test_calls_hold_few_filter_pairs_and_the_cpu_caps_the_chunk(graph, rng, monkeypatch):
  params = random_params(rng, "TransE", graph.num_entities, graph.num_relations, 4)
  index = FilterIndex(graph)
  want = Evaluator(graph, "valid", "TransE", 8, index).ranks(params)
  monkeypatch.setattr(ranking, "CALL_PAIRS", 1)  # one chunk a call
  monkeypatch.setattr(ranking, "CPU_CHUNK_DISTANCES", 3 * graph.num_entities + 2)
  ev = Evaluator(graph, "valid", "TransE", 8, index, log=_quiet)
  assert ev.chunk == 3 and ev._plan.per_call == 1  # pylint: disable=protected-access
  assert ev._plan.calls == 27  # 80 queries in chunks of 3  # pylint: disable=protected-access
  got = ev.ranks(params)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])


def test_progress_line_is_silent_on_short_jobs():
  lines = []
  line = progress.ProgressLine("work", 10, lines.append, every=3600.0)
  for done in range(1, 11):
    line.update(done)
  assert lines == []
  line = progress.ProgressLine("work", 2000, lines.append, every=0.0, unit="rows")
  line.update(500)
  line.update(2000)
  assert lines[0].startswith("work: 500/2,000 rows (25%), ") and " rows/s, ETA " in lines[0]
  assert lines[1].startswith("work: 2,000/2,000 rows (100%) in ")
  assert [progress.duration(s) for s in (4.4, 185, 7620)] == ["4s", "3m05s", "2h07m"]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
  root = tmp_path_factory.mktemp("fake-run")
  data = fake_run.write_fake_run(root / "run", entities=300, triples_per_entity=3.0,
                                 relations=4, dim=8, held_out=20, seed=1)
  queries = fake_run.write_queries(root / "queries.tsv", data, 2500, seed=1)
  return root / "run", queries


@pytest.mark.slow
def test_fake_run_loads_and_predicts_as_the_dense_ranking(fake, monkeypatch):
  workdir, queries = fake
  model = hale_jax.load(workdir, log=_quiet)
  assert model.data.num_entities == 300 and model.params["entity"].shape == (300, 8)
  monkeypatch.setattr(topk, "ENTITY_CHUNK", 16)  # 19 blocks, the last overlapping
  parsed = inference.parse_queries(queries)[:200]
  tails = [q for q in parsed if q[2] == "?"]
  ents = np.array([model.entity_id(h) for h, _, _ in tails])
  rels = np.array([model.relation_id(r) for _, r, _ in tails])
  dense = model.query_distances(ents, rels)
  rows, cols = model.filter_index().answers(ents, rels)
  dense[rows, cols] = np.inf
  for k in (1, 10, 300):
    got = model.predict_tails([q[0] for q in tails], [q[1] for q in tails], k)
    for i, answers in enumerate(got):
      order = np.argsort(dense[i], kind="stable")[:k]
      order = order[np.isfinite(dense[i][order])]
      assert [a.name for a in answers] == [model.entities[j] for j in order]
      np.testing.assert_allclose([a.distance for a in answers], dense[i][order], rtol=1e-5)
  # A hub query with many known answers: k beyond what the filter leaves.
  counts = model.filter_index().counts(ents, rels)
  hub = int(np.argmax(counts))
  known = len(set(cols[rows == hub].tolist()))
  assert known >= 5
  answers = model.predict_tails(tails[hub][0], tails[hub][1], k=300)[0]
  assert len(answers) == 300 - known and all(np.isfinite(a.distance) for a in answers)


def test_fake_run_refuses_an_existing_folder(fake):
  with pytest.raises(FileExistsError, match="exists"):
    fake_run.write_fake_run(fake[0], entities=10)


@pytest.mark.slow
def test_predict_command_streams_a_queries_file_with_progress(fake, tmp_path):
  workdir, queries = fake
  out = tmp_path / "answers.tsv"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "hale_jax.predict", f"--workdir={workdir}",
                         f"--queries={queries}", f"--output={out}", "--k=3",
                         "--progress_seconds=0"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  lines = [x for x in proc.stderr.splitlines() if x.startswith(f"answering {queries}: ")]
  assert len(lines) == 3, proc.stderr  # batches of 1,024 queries
  assert "1,024/2,500 queries (41%)" in lines[0] and "(100%)" in lines[-1]
  header, *rows = out.read_text(encoding="utf-8").splitlines()
  assert header.startswith("# head\trelation\ttail\trank\tanswer\tlabel\tscore")
  model = hale_jax.load(workdir, log=_quiet)
  parsed = inference.parse_queries(queries)
  want = inference.answer_queries(model, parsed[-5:], k=3)
  assert len(rows) == sum(len(a) for a in inference.answer_queries(model, parsed, k=3))
  assert [r.split("\t")[4] for r in rows[-sum(len(a) for a in want):]] == [
      a.name for answers in want for a in answers]
