"""The portable trained model (``hale_jax.load``): predictions and their scores, names by
label, embeddings, evaluation of a split or of any triples, reciprocal relation names, and a
run folder used without its dataset.

The end-to-end tests (``slow``) share run folders with other test files through fixtures in
``tests/conftest.py``, built once per test run.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import hale_jax
from hale_jax import inference, models
from hale_jax import runfiles, trained_model
from hale_jax import predict as predict_cli
from hale_jax.data import DataError
from hale_jax.ranking import metrics_from_ranks

from benchmarks import faults
from tests import helpers


def _np_rotl_queries(p: dict, heads: np.ndarray, rels: np.ndarray) -> np.ndarray:
  """RotL's query vectors in float64: Givens rotation, then the flexible addition."""
  e = p["entity"][heads]
  d = e.shape[1]
  rot = p["rotation"][rels].reshape(-1, d // 2, 2)
  rot = rot / np.maximum(np.linalg.norm(rot, axis=-1, keepdims=True), 1e-15)
  x = e.reshape(-1, d // 2, 2)
  rotated = np.stack([rot[..., 0] * x[..., 0] - rot[..., 1] * x[..., 1],
                      rot[..., 1] * x[..., 0] + rot[..., 0] * x[..., 1]], -1).reshape(-1, d)
  y = p["translation"][rels]
  denom = np.maximum(1.0 + np.sum(rotated * y, -1, keepdims=True), models.ROTL_MIN_DENOMINATOR)
  return p["alpha"][rels][:, None] * (rotated + y) / denom


def _np_hanon(x, beta=3.0, gamma=10.0):
  return gamma / (1.0 + np.exp(-(beta * (x - 0.5) - np.log(gamma))))


def _np_score(p: dict, triples: np.ndarray) -> np.ndarray:
  q = _np_rotl_queries(p, triples[:, 0], triples[:, 1])
  d2 = np.sum((q - p["entity"][triples[:, 2]]) ** 2, axis=-1)
  c_r = np.log1p(np.exp(p["scale"][triples[:, 1]]))
  return -_np_hanon(c_r * d2)


def _np_ranks(model: trained_model.TrainedModel, split: str | np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
  """Filtered optimistic and pessimistic ranks of a split (or of given id triples, which
  then join the known answers), tail queries first, from the model's distances and a plain
  NumPy filter (the evaluator not involved)."""
  given = not isinstance(split, str)
  tr, nr = (np.asarray(split) if given else model.data.split(split)), model.data.num_relations
  ents = np.concatenate([tr[:, 0], tr[:, 2]])
  rels = np.concatenate([tr[:, 1], tr[:, 1] + nr])
  targets = np.concatenate([tr[:, 2], tr[:, 0]])
  known = {}
  for h, r, t in np.concatenate([model.data.train, model.data.valid, model.data.test,
                                 tr if given else tr[:0]]):
    known.setdefault((h, r), set()).add(t)
    known.setdefault((t, r + nr), set()).add(h)
  d = model.query_distances(ents, rels)
  opt, pess = [], []
  for i, (e, r, t) in enumerate(zip(ents, rels, targets)):
    mask = np.ones(d.shape[1], bool)
    mask[list(known[(e, r)] - {t})] = False
    mask[t] = False
    opt.append(1 + np.sum((d[i] < d[i, t]) & mask))
    pess.append(1 + np.sum((d[i] <= d[i, t]) & mask))
  return np.array(opt), np.array(pess)


def test_score_is_minus_h_of_scaled_squared_distance(fake, fake_model, tmp_path):
  exported = inference.export_run(fake, "npz", tmp_path / "export.npz")
  with np.load(exported) as f:
    p = {k: f[k].astype(np.float64) for k in ("entity", "rotation", "translation", "scale",
                                               "alpha")}
    np.testing.assert_allclose(f["c_r"], np.log1p(np.exp(p["scale"])), rtol=1e-6)
    rel_names = [str(n) for n in f["relation_names"]]
  m = fake_model
  triples = [("t0", "parent_of", "t0.1"), ("t0.1.2", "parent_of_reverse", "t0.1"),
             ("t1.2", "sibling_of", "t0.0.0"), ("t0.0", "parent_of_inverse", "t0"),
             ("level_2", "at_level_inverse", "t1.1.1")]
  ids = np.array([(m.entity_id(h), rel_names.index(r), m.entity_id(t)) for h, r, t in triples])
  got = m.score(triples)
  want = _np_score(p, ids)
  assert got.shape == (len(triples),)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert len(set(np.round(want, 3))) > 1  # the triples score differently


def test_embedding_returns_the_entity_table_rows(fake, fake_model):
  with np.load(fake / runfiles.PARAMS) as f:
    table = f["entity"]
  names = ["t1.0.2", "t0", "level_3"]
  got = fake_model.embedding(names)
  np.testing.assert_array_equal(got, table[[fake_model.entities.index(n) for n in names]])
  np.testing.assert_array_equal(fake_model.embedding("t0"), table[[fake_model.entity_id("t0")]])


def test_filtered_predictions_leave_out_known_answers(fake_model):
  m = fake_model
  head, rel = "t0", "parent_of"
  known = {m.entities[t] for h, r, t in np.concatenate([m.data.train, m.data.valid,
                                                         m.data.test])
           if m.entities[h] == head and m.relations[r] == rel}
  assert known == {"t0.0", "t0.1", "t0.2"}
  n = m.data.num_entities
  everything = [a.name for a in m.predict_tails(head, rel, k=n, filtered=False)[0]]
  filtered = [a.name for a in m.predict_tails(head, rel, k=n, filtered=True)[0]]
  assert sorted(everything) == sorted(m.entities)
  assert known <= set(everything) and not known & set(filtered)
  assert filtered == [x for x in everything if x not in known]  # same order otherwise
  top = m.predict_tails([head, head], [rel, rel], k=3, filtered=True)
  assert [a.name for a in top[0]] == filtered[:3] == [a.name for a in top[1]]
  distances = [a.distance for a in m.predict_tails(head, rel, k=n, filtered=False)[0]]
  assert distances == sorted(distances)


def test_prediction_scores_are_the_models_scores_best_first(fake_model):
  """One convention: a prediction's score is ``score()`` of the triple as asked (higher is
  better), so answers come in decreasing score; a head query asks ``(tail, r^-1, ?)``."""
  m = fake_model
  tails = m.predict_tails("t0", "parent_of", k=6, filtered=False)[0]
  want = m.score([("t0", "parent_of", a.name) for a in tails])
  np.testing.assert_allclose([a.score for a in tails], want, rtol=1e-6)
  assert all(x.score >= y.score for x, y in zip(tails, tails[1:]))
  heads = m.predict_heads("parent_of", "t0.1", k=6, filtered=False)[0]
  back = m.relation_names[m.data.num_relations + m.relation_id("parent_of")]
  np.testing.assert_allclose([a.score for a in heads],
                             m.score([("t0.1", back, a.name) for a in heads]), rtol=1e-6)
  assert all(x.score >= y.score for x, y in zip(heads, heads[1:]))
  assert predict_cli.TSV_HEADER.startswith("# head\trelation\ttail\trank\tanswer\tlabel\tscore")
  assert "higher is better" in predict_cli.TSV_HEADER


def test_head_prediction_is_the_reciprocal_tail_prediction(fake_model):
  m = fake_model
  heads = m.predict_heads("parent_of", "t0.1.2", k=5, filtered=False)[0]
  tails = m.predict_tails("t0.1.2", "parent_of_inverse", k=5, filtered=False)[0]
  assert heads == tails
  # parent_of_reverse is a real relation: its own tail prediction, not parent_of's reciprocal.
  real = m.predict_tails("t0.1.2", "parent_of_reverse", k=5, filtered=False)[0]
  assert [a.distance for a in real] != [a.distance for a in tails]
  filtered = m.predict_heads("parent_of", "t0.1.2", k=5)[0]
  assert "t0.1" not in [a.name for a in filtered]  # the known parent is left out


def test_reciprocal_relation_names_do_not_collide(fake_model):
  names = fake_model.relation_names
  assert len(names) == len(set(names)) == 2 * len(fake_model.relations)
  assert "parent_of_reverse" in names[:len(fake_model.relations)]
  assert names[len(fake_model.relations):] == [n + "_inverse" for n in fake_model.relations]
  assert fake_model.relation_id("parent_of_inverse") == (
      fake_model.relation_id("parent_of") + len(fake_model.relations))


def test_names_by_label(fake_model):
  m = fake_model
  assert m.entity_id("Root Zero") == m.entity_id("t0")
  assert m.relation_id("has child") == m.relation_id("parent_of")
  by_label = m.predict_tails("Root Zero", "has child", k=4)[0]
  assert by_label == m.predict_tails("t0", "parent_of", k=4)[0]
  assert by_label[0].label in (None, *helpers.ENTITY_LABELS.values())
  labelled = m.predict_tails("t0.0", "parent_of_reverse", k=84, filtered=False)[0]
  assert {a.name: a.label for a in labelled}["t0.2"] == "Lone Child"
  assert {a.name: a.label for a in labelled}["t1.1"] is None


def test_ambiguous_label_and_unknown_name_are_one_clear_error(fake_model):
  with pytest.raises(DataError, match="ambiguous") as err:
    fake_model.entity_id("Twin")
  msg = str(err.value)
  assert "\n" not in msg and "t0.0" in msg and "t0.1" in msg and "give the name" in msg
  with pytest.raises(DataError) as err:
    fake_model.predict_tails("t0.0.9", "parent_of")
  msg = str(err.value)
  assert "\n" not in msg and "unknown entity 't0.0.9'" in msg and "did you mean" in msg
  assert "'t0.0.0'" in msg and "entities.tsv" in msg and "entitys" not in msg
  with pytest.raises(DataError, match="unknown relation 'parent'") as err:
    fake_model.relation_id("parent")
  assert "relations.tsv" in str(err.value) and "\n" not in str(err.value)


def test_breakdown_adds_up_and_agrees_with_separate_ranks(fake_model):
  m = fake_model
  overall = m.evaluate("test")
  n_test = len(m.data.test)
  by_direction = m.evaluate("test", breakdown="direction")
  assert list(by_direction) == ["tail", "head"]
  assert [g["count"] for g in by_direction.values()] == [n_test, n_test]
  opt, pess = _np_ranks(m, "test")
  want = metrics_from_ranks(opt, pess)
  for mode in ("realistic", "pessimistic", "optimistic"):
    assert overall[mode] == pytest.approx(want[mode], rel=1e-12)
  tail = metrics_from_ranks(opt[:n_test], pess[:n_test])
  head = metrics_from_ranks(opt[n_test:], pess[n_test:])
  assert by_direction["tail"]["realistic"] == pytest.approx(tail["realistic"], rel=1e-12)
  assert by_direction["head"]["realistic"] == pytest.approx(head["realistic"], rel=1e-12)
  by_relation = m.evaluate("test", breakdown="relation")
  assert set(by_relation) <= set(m.relations)
  assert sum(g["count"] for g in by_relation.values()) == 2 * n_test
  for mode in ("realistic", "pessimistic", "optimistic"):
    for key in ("mrr", "mr", "hits@10"):
      weighted = sum(g["count"] * g[mode][key] for g in by_relation.values()) / (2 * n_test)
      assert weighted == pytest.approx(overall[mode][key], rel=1e-9)
  with pytest.raises(ValueError, match="unknown breakdown"):
    m.evaluate("test", breakdown="entity")


@pytest.mark.slow
def test_evaluate_given_triples_by_name_id_or_file(fake_model, tmp_path):
  """Triples of one's own: ranked as the NumPy reference with them among the known answers;
  names, ids and a file give the same metrics; unknown names are one line with file:line."""
  m = fake_model
  rng = np.random.default_rng(7)
  n, nr = m.data.num_entities, m.data.num_relations
  ids = np.stack([rng.integers(0, n, 12), rng.integers(0, nr, 12), rng.integers(0, n, 12)], 1)
  ids[3] = ids[5]  # a repeated triple: still ranked twice
  opt, pess = _np_ranks(m, ids)
  want = metrics_from_ranks(opt, pess)
  got = m.evaluate(ids)
  for mode in ("realistic", "pessimistic", "optimistic"):
    assert got[mode] == pytest.approx(want[mode], rel=1e-12)
  names = [(m.entities[h], m.relations[r], m.entities[t]) for h, r, t in ids]
  assert m.evaluate(names) == got
  path = tmp_path / "mine.tsv"
  path.write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in names))
  assert m.evaluate(path) == got and m.evaluate(str(path)) == got
  flipped = [(t, m.relation_names[nr + m.relation_id(r)], h) for h, r, t in names]
  assert m.evaluate(flipped) == got  # (t, r^-1, h) is (h, r, t)
  assert m.evaluate(m.data.test) == m.evaluate("test")  # test is known already
  groups = m.evaluate(ids, breakdown="direction")
  assert [g["count"] for g in groups.values()] == [12, 12]

  path.write_text(f"{names[0][0]}\t{names[0][1]}\t{names[0][2]}\n"
                  f"{names[1][0]}\tno_such_relation\t{names[1][2]}\n")
  with pytest.raises(DataError, match=re.escape(f"{path}:2: unknown relation 'no_such_relation'")):
    m.evaluate(path)
  with pytest.raises(DataError, match=r"triple 1 \('t0', 'parent_of', 'nobody'\): unknown "
                                      r"entity 'nobody'"):
    m.evaluate([names[0], ("t0", "parent_of", "nobody")])
  with pytest.raises(DataError, match=r"triple 0 .*ids out of range"):
    m.evaluate(np.array([[n, 0, 0]]))
  with pytest.raises(ValueError, match=r"\[T, 3\]"):
    m.evaluate(np.zeros((4, 2), np.int64))
  with pytest.raises(DataError, match="no such file; give 'valid', 'test'"):
    m.evaluate("tset")
  with pytest.raises(ValueError, match="filtered protocol only"):
    m.evaluate(ids, protocol="ogb")


@pytest.mark.slow
def test_portable_model_works_without_the_dataset(portable, labelled_data_dir, tmp_path,
                                                  tmp_path_factory):
  workdir = portable[0]
  model = hale_jax.load(workdir)
  assert model.labels["entity"] == helpers.ENTITY_LABELS and model.labels["relation"] == helpers.RELATION_LABELS
  rng = np.random.default_rng(0)
  queries = [("Root Zero", "has child", "?"), ("?", "is sibling of", "Lone Child")]  # labels
  for i in range(998):
    e = model.entities[rng.integers(model.data.num_entities)]
    r = model.relations[rng.integers(model.data.num_relations)]
    queries.append((e, r, "?") if i % 2 else ("?", r, e))
  qfile = tmp_path / "queries.tsv"
  qfile.write_text("# 1,000 queries\n" + "".join("\t".join(q) + "\n" for q in queries))
  want = inference.answer_queries(model, inference.parse_queries(qfile), k=5)
  want_metrics = model.evaluate("test")
  want_groups = model.evaluate("test", breakdown="relation")
  want_export = inference.export_run(workdir, "npz", tmp_path / "original.npz")
  assert want_metrics == portable[2]["metrics"]["test"]

  copy = tmp_path / "elsewhere" / "run"
  shutil.copytree(workdir, copy)
  moved = labelled_data_dir.with_name("moved-away")
  labelled_data_dir.rename(moved)
  try:
    assert not labelled_data_dir.exists()
    copied = hale_jax.load(copy)
    assert inference.answer_queries(copied, inference.parse_queries(qfile), k=5) == want
    assert copied.evaluate("test") == want_metrics
    env = faults.launcher_env(helpers.compile_cache_dir(tmp_path_factory))
    predict, evaluate, export = helpers.cli_many([
        ("predict", f"--workdir={copy}", f"--queries={qfile}", "--k=5",
         f"--output={tmp_path / 'answers.tsv'}"),
        ("evaluate", f"--workdir={copy}", "--breakdown=relation",
         f"--output={tmp_path / 'metrics.json'}"),
        ("export", f"--workdir={copy}"),
    ], env)
  finally:
    moved.rename(labelled_data_dir)
  assert predict.returncode == 0, predict.stderr
  assert "1000 queries answered" in predict.stderr
  expected = predict_cli.TSV_HEADER + "".join(
      f"{chr(9).join(q)}\t{rank}\t{a.name}\t{a.label or ''}\t{a.score:.6g}\n"
      for q, ans in zip(queries, want) for rank, a in enumerate(ans, start=1))
  assert (tmp_path / "answers.tsv").read_text() == expected
  assert evaluate.returncode == 0, evaluate.stderr
  doc = faults.strict_json((tmp_path / "metrics.json").read_text())
  assert doc["metrics"] == want_metrics
  assert doc["breakdown"] == {"by": "relation", "groups": want_groups}
  assert "realistic ties by relation:" in evaluate.stdout
  assert export.returncode == 0, export.stderr
  with np.load(copy / "export.npz") as got, np.load(want_export) as orig:
    assert sorted(got.files) == sorted(orig.files)
    for k in orig.files:
      np.testing.assert_array_equal(got[k], orig[k])
  # The label queries were answered as the names': t0 by "Root Zero", t0.2 by "Lone Child"
  # (distances may differ in the last bit between batch sizes).
  for got, alone in ((want[0], model.predict_tails("t0", "parent_of", k=5)[0]),
                     (want[1], model.predict_heads("sibling_of", "t0.2", k=5)[0])):
    assert [(a.name, a.label) for a in got] == [(a.name, a.label) for a in alone]
    assert [a.distance for a in got] == pytest.approx([a.distance for a in alone], rel=1e-6)


def test_reciprocal_names_pick_a_free_suffix():
  assert trained_model.reciprocal_names(["X", "Y"]) == ["X_reverse", "Y_reverse"]
  assert trained_model.reciprocal_names(["X", "X_reverse"]) == ["X_inverse", "X_reverse_inverse"]
  taken = ["X", "X_reverse", "X_inverse", "X^-1", "X_reverse_inverse"]
  names = trained_model.reciprocal_names(taken)
  assert names == [n + "_reciprocal" for n in taken]
  assert not set(names) & set(taken) and len(set(names)) == len(names)


@pytest.mark.slow
def test_truncated_params_file_falls_back_to_the_best_checkpoint(wave, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(wave.dirs["ckpt"], copy)
  params = copy / runfiles.PARAMS
  params.write_bytes(params.read_bytes()[:len(params.read_bytes()) // 2])
  results = faults.strict_json((copy / "results.json").read_text())
  assert hale_jax.load(copy).evaluate() == results["metrics"]["test"]


@pytest.mark.slow
def test_relation_named_like_a_reciprocal(wave, tmp_path):
  workdir = wave.dirs["ckpt"]
  helpers.assert_ok(wave.procs["ckpt"])
  model = hale_jax.load(workdir)
  names = model.relation_names
  assert len(set(names)) == len(names) == 10
  assert "parent_of_reverse" in model.relations and "parent_of_inverse" in names
  exported = inference.export_run(workdir, "npz", tmp_path / "export.npz")
  with np.load(exported) as f:
    assert [str(n) for n in f["relation_names"]] == names
  heads = model.predict_heads("parent_of", "t0.1.2", k=4)[0]
  assert heads == model.predict_tails("t0.1.2", "parent_of_inverse", k=4)[0]
  assert "t0.1" not in [a.name for a in heads]  # its known parent is filtered out
  env = dict(wave.env)
  env.pop("JAX_PLATFORMS")  # item 13: no backend search noise either
  (by_reverse,) = helpers.cli_many([
      ("predict", f"--workdir={workdir}", "--relation=parent_of_reverse", "--head=t0.1.2",
       "--k=4")], env)
  helpers.assert_ok(by_reverse)
  assert "Unable to initialize backend" not in by_reverse.stdout + by_reverse.stderr
  rows = [l.split()[1] for l in by_reverse.stdout.splitlines()[2:]]
  assert rows == [a.name for a in model.predict_tails("t0.1.2", "parent_of_reverse", k=4)[0]]
  assert by_reverse.stdout.startswith("(t0.1.2, parent_of_reverse, ?)  filtered")
