"""Issue 32's workflow features: the portable trained model (``hale_jax.load``, predict /
evaluate / export from the run folder alone, names by label, ``score``, ``embedding``,
filtering), extending a finished run, ``--data_file``, ``metrics.jsonl``, TensorBoard and
W&B writers, the progress line, early stopping, ``evaluate --breakdown``, halving the ranking
chunk out of device memory, ``plot`` and ``labels``.

The quick tests use a run folder written by hand (random parameters, no training: see
:func:`_fake_run`); the end-to-end ones (``slow``) share three trained runs through
module-scoped fixtures.  Command-line runs use JAX's persistent compilation cache
(``faults.launcher_env``), so repeated commands skip most of their compile.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from absl import flags

import hale_jax
from hale_jax import callbacks, dataspec, inference, labels, models, options, plot, rundata
from hale_jax import rundir, runfiles, synthetic, tracking, trained
from hale_jax import predict as predict_cli
from hale_jax.callbacks import Callback, Validation
from hale_jax.config import Config
from hale_jax.data import DataError, load_folder
from hale_jax.evaluation import Evaluator, metrics_from_ranks
from hale_jax.loop import train

from benchmarks import faults

REPO = Path(__file__).resolve().parents[1]
# child_of is the reverse of parent_of: named so, the reciprocal suffix "_reverse" would collide.
RENAME = {"child_of": "parent_of_reverse"}
ENTITY_LABELS = {"t0": "Root Zero", "t1": "Root One", "t0.0": "Twin", "t0.1": "Twin",
                 "t0.2": "Lone Child"}
RELATION_LABELS = {"parent_of": "has child", "sibling_of": "is sibling of"}
RUN = dict(model="RotL", dim=8, batch_size=64, max_seconds=0, learning_rate=0.01)


def _quiet(line):
  del line


def _dataset(folder: Path) -> Path:
  """The tiny synthetic graph (84 entities) as a folder, with label files."""
  faults.write_folder(synthetic.generate(seed=0, num_trees=2, branching=3, depth=3), folder,
                      RENAME)
  (folder / "entity_labels.tsv").write_text(
      "".join(f"{k}\t{v}\n" for k, v in ENTITY_LABELS.items()), encoding="utf-8")
  (folder / "relation_labels.tsv").write_text(
      "".join(f"{k}\t{v}\n" for k, v in RELATION_LABELS.items()), encoding="utf-8")
  return folder


def _spec(folder: Path) -> dataspec.Folder:
  return dataspec.Folder(str(folder.resolve()))


def _fake_run(workdir: Path, data_dir: Path, seed: int = 0) -> Path:
  """A run folder as a finished run leaves it, with random RotL parameters instead of trained
  ones (run.json, vocabularies, triples, label files, best_params.npz)."""
  data = load_folder(data_dir)
  config = Config.make(**RUN, max_epochs=1)
  workdir.mkdir(parents=True)
  spec = rundir.run_spec(config, data, _spec(data_dir))
  rundir.write_run(workdir, spec)
  rundata.keep_data(workdir, data, _spec(data_dir))
  params = models.init_params("RotL", jax.random.key(seed), data.num_entities,
                              data.num_relations, 8, init_scale=0.3)
  rng = np.random.default_rng(seed)
  arrays = {k: np.asarray(v) for k, v in params.items()}
  arrays["scale"] = rng.normal(0.0, 0.7, arrays["scale"].shape).astype(np.float32)
  arrays["alpha"] = rng.uniform(0.5, 1.5, arrays["alpha"].shape).astype(np.float32)
  runfiles.write_npz(workdir / runfiles.PARAMS, arrays)
  return workdir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return _dataset(tmp_path_factory.mktemp("workflow-data") / "tiny")


@pytest.fixture(scope="module")
def fake(data_dir, tmp_path_factory):
  return _fake_run(tmp_path_factory.mktemp("fake") / "run", data_dir)


@pytest.fixture(scope="module")
def fake_model(fake):
  return hale_jax.load(fake)


def _cache(tmp_path_factory) -> Path:
  return tmp_path_factory.getbasetemp() / "jax-cache"


def _start(module: str, *args: str, env: dict) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", f"hale_jax.{module}", *args], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli_many(calls: list[tuple], env: dict) -> list[subprocess.CompletedProcess]:
  """Runs independent commands ``(module, *args)`` at the same time; their results in order."""
  procs = [_start(call[0], *call[1:], env=env) for call in calls]
  out = []
  for call, proc in zip(calls, procs):
    stdout, stderr = proc.communicate(timeout=300)
    out.append(subprocess.CompletedProcess(call, proc.returncode, stdout, stderr))
  return out


# ------------------------------------------------------------------ NumPy references

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


def _np_ranks(model: trained.TrainedModel, split: str | np.ndarray
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


# ------------------------------------------------------------- the trained model (quick)

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
  assert by_label[0].label in (None, *ENTITY_LABELS.values())
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


# ------------------------------------------------------------ evaluation (quick)

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


def _oom_after_compile(monkeypatch, above: int, calls: list):
  """Makes every compiled ranking function raise XLA's out-of-memory error while the
  evaluator's chunk is larger than ``above``."""
  real_compile = Evaluator.compile

  def compile_(self, params):
    seconds = real_compile(self, params)
    compiled, chunk = self._compiled, self.chunk

    def run(*args):
      calls.append(chunk)
      if chunk > above:
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                           "123456789 bytes.")
      return compiled(*args)
    self._compiled = run
    return seconds
  monkeypatch.setattr(Evaluator, "compile", compile_)


def test_ranking_halves_its_chunk_when_out_of_device_memory(fake_model, monkeypatch):
  m = fake_model
  act = m.activation
  normal = Evaluator(m.data, "test", "RotL", 32, m.filter_index(), activation=act,
                     log=_quiet)(m.params)
  calls, lines = [], []
  _oom_after_compile(monkeypatch, 16, calls)
  ev = Evaluator(m.data, "test", "RotL", 32, m.filter_index(), activation=act,
                 log=lines.append)
  assert ev(m.params) == normal
  assert ev.chunk == 16 and calls == [32, 16]
  assert len(lines) == 1, lines
  assert "out of device memory with chunks of 32 queries; retrying with 16" in lines[0]
  assert "--eval_chunk" in lines[0]
  assert ev(m.params) == normal and calls == [32, 16, 16] and len(lines) == 1  # stays at 16


def test_ranking_gives_up_on_other_errors_and_at_chunk_one(fake_model, monkeypatch):
  m = fake_model
  calls, lines = [], []
  _oom_after_compile(monkeypatch, 0, calls)
  ev = Evaluator(m.data, "valid", "RotL", 2, m.filter_index(), activation=m.activation,
                 log=lines.append)
  with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
    ev(m.params)
  assert calls == [2, 1] and len(lines) == 1


# ------------------------------------------------------------- callbacks (quick)

def _validation(epoch, mrr=0.1, loss=1.0, train_seconds=None, eval_seconds=None,
                max_epochs=10, max_seconds=0.0) -> Validation:
  metrics = {mode: {"mr": 10.0, "mrr": mrr, "hits@1": 0.0, "hits@3": 0.1, "hits@10": 0.5}
             for mode in ("realistic", "pessimistic", "optimistic")}
  return Validation(epoch=epoch, step=13 * epoch,
                    train_seconds=2.0 * epoch if train_seconds is None else train_seconds,
                    eval_seconds=0.5 * epoch if eval_seconds is None else eval_seconds,
                    loss=loss, learning_rate=0.01, triples_per_second=1000.0, metrics=metrics,
                    best=metrics["realistic"], best_epoch=epoch, improved=True, params=None,
                    max_seconds=max_seconds, max_epochs=max_epochs)


def _start_info(epoch=0, curve=()):
  return {"config": None, "workdir": None, "epoch": epoch, "epoch_step": 0, "step": 13 * epoch,
          "train_seconds": 2.0 * epoch, "eval_seconds": 0.5 * epoch, "curve": list(curve),
          "steps_per_epoch": 13}


def test_progress_line_shows_labelled_times_and_the_time_left():
  lines = []
  p = callbacks.ProgressPrinter(lines.append, test_fraction=1.0)
  p.on_start(_start_info())
  p.on_validation(_validation(2))  # 2 s per epoch, 8 epochs left; last eval 1 s, final 2 s
  assert lines[-1].endswith("| time left 18s"), lines
  assert "| train time 4.0s, eval time 1.0s | time left" in lines[-1], lines
  assert lines[-1].count("left") == 1 and "ETA" not in lines[-1]
  p.on_validation(_validation(4, eval_seconds=1.5))  # last eval 0.5 s, final 1 s
  assert lines[-1].endswith("| time left 13s"), lines
  resumed = callbacks.ProgressPrinter(lines.append, test_fraction=2.0)
  resumed.on_start(_start_info(epoch=8))
  resumed.on_validation(_validation(9, max_epochs=0, max_seconds=100.0, train_seconds=30.0,
                                    eval_seconds=4.5))  # final: 0.5 s x 3
  assert lines[-1].endswith("| time left 1m12s"), lines
  p = callbacks.ProgressPrinter(lines.append)
  p.on_validation(_validation(1, max_epochs=0, max_seconds=0.0))
  assert "left" not in lines[-1] and "ETA" not in lines[-1]
  assert callbacks._duration(3 * 3600 + 61) == "3h01m"


def test_early_stopping_counts_validations_without_gain():
  stop = callbacks.EarlyStopping(patience=2)
  stop.on_start(_start_info())
  answers = [stop.on_validation(_validation(i + 1, mrr)) for i, mrr in
             enumerate([0.1, 0.2, 0.2, 0.3, 0.25, 0.3])]
  assert answers[:5] == [None] * 5
  assert answers[5].startswith("early stopping: no valid MRR gain above 0 in 2 validations "
                               "(best 0.3000)")
  with_delta = callbacks.EarlyStopping(patience=2, min_delta=0.05)
  with_delta.on_start(_start_info())
  answers = [with_delta.on_validation(_validation(i + 1, mrr)) for i, mrr in
             enumerate([0.1, 0.12, 0.14])]
  assert answers[:2] == [None, None] and "above 0.05" in answers[2]
  # A resumed run replays its curve: one more flat validation ends it.
  resumed = callbacks.EarlyStopping(patience=2)
  resumed.on_start(_start_info(3, [{"valid_mrr": 0.3}, {"valid_mrr": 0.2}]))
  assert resumed.on_validation(_validation(4, 0.3)) is not None


def test_stall_warning_is_said_once():
  lines = []
  stall = callbacks.StallWarning(lines.append)
  for epoch, loss in enumerate([5.0, 4.0, 4.0, 4.0], start=1):
    stall.on_validation(_validation(epoch, loss=loss))
  assert lines == []
  stall.on_validation(_validation(5, loss=4.0))
  assert len(lines) == 1 and lines[0].startswith("warning: the training loss has stayed at 4 ")
  assert "--init_scale" in lines[0]
  stall.on_validation(_validation(6, loss=4.0))
  assert len(lines) == 1


def test_metrics_file_drops_lines_beyond_the_checkpoint(tmp_path):
  mf = tracking.MetricsFile(tmp_path)
  mf.on_start(_start_info())  # no file yet
  for epoch in range(1, 6):
    mf.on_validation(_validation(epoch, mrr=epoch / 10))
  records = [faults.strict_json(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
  assert records[1]["valid_mrr"] == 0.2 and records[1]["valid_pessimistic_mrr"] == 0.2
  assert records[1]["step"] == 26 and records[1]["learning_rate"] == 0.01
  tracking.MetricsFile(tmp_path).on_start(_start_info(epoch=3))  # resumed from epoch 3
  kept = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in kept] == [1, 2, 3]


def _event_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
  """``{tag: [(step, value)]}`` from TensorBoard event files, reading the TFRecord framing
  (8-byte length, its masked crc32c, the data, its masked crc32c) and checking both crcs."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  from tensorboardX.record_writer import masked_crc32c  # pylint: disable=import-outside-toplevel
  out: dict[str, list[tuple[int, float]]] = {}
  files = sorted(logdir.rglob("events.out.tfevents.*"))
  assert files, f"no event file in {logdir}"
  for path in files:
    raw, pos = path.read_bytes(), 0
    while pos < len(raw):
      header = raw[pos:pos + 8]
      (length,) = struct.unpack("<Q", header)
      assert struct.unpack("<I", raw[pos + 8:pos + 12])[0] == masked_crc32c(header)
      data = raw[pos + 12:pos + 12 + length]
      assert struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])[0] == \
          masked_crc32c(data)
      pos += 16 + length
      event = event_pb2.Event()
      event.ParseFromString(data)
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_tensorboard_writer_events_read_back(tmp_path):
  tb = tracking.TensorBoardWriter(tmp_path / "tb")
  for epoch, mrr in ((1, 0.125), (2, 0.25)):
    tb.on_validation(_validation(epoch, mrr=mrr, loss=3.0 / epoch))
  test = {mode: {"mrr": 0.5, "mr": 3.0, "hits@1": 0.25, "hits@3": 0.5, "hits@10": 1.0}
          for mode in ("realistic", "pessimistic")}
  tb.on_end({"metrics": {"test": test, "epochs": 2}})
  scalars = _event_scalars(tmp_path / "tb")
  assert scalars["valid/mrr"] == [(1, 0.125), (2, 0.25)]
  assert scalars["train/loss"] == [(1, 3.0), (2, 1.5)]
  assert scalars["valid/pessimistic_mrr"] == [(1, 0.125), (2, 0.25)]
  assert scalars["test_realistic/hits_3"] == [(2, 0.5)]  # tensorboardX writes @ as _
  assert "speed/triples_per_second" in scalars and "train/learning_rate" in scalars


class _FakeWandb:
  """What ``tracking.WandbWriter`` calls of the ``wandb`` module, recorded."""

  def __init__(self):
    self.calls: list[tuple] = []
    self.module = types.ModuleType("wandb")
    self.module.init = self._init
    self.summary: dict = {}

  def _init(self, **kwargs):
    self.calls.append(("init", kwargs))
    run = types.SimpleNamespace(summary=self.summary)
    run.log = lambda record, step=None: self.calls.append(("log", record, step))
    run.finish = lambda: self.calls.append(("finish",))
    return run


def test_wandb_writer_calls_init_log_finish(monkeypatch):
  fake = _FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake.module)
  w = tracking.WandbWriter("proj", {"lam": 0.3}, "run-1")
  w.on_validation(_validation(1, mrr=0.25))
  w.on_end({"metrics": {"test": {"realistic": {"mrr": 0.5, "hits@1": 0.25}}}})
  assert fake.calls[0] == ("init", {"project": "proj", "config": {"lam": 0.3}, "name": "run-1"})
  assert fake.calls[1][0] == "log" and fake.calls[1][2] == 1
  assert fake.calls[1][1] == tracking.validation_record(_validation(1, mrr=0.25))
  assert fake.calls[2:] == [("finish",)]
  assert fake.summary == {"test_mrr": 0.5, "test_hits@1": 0.25}


def test_missing_tracking_package_is_a_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import raises ImportError
  with pytest.raises(ValueError, match=r"wandb is not installed; pip install wandb"):
    tracking.WandbWriter("proj", {}, "x")


# --------------------------------------------------------------- plot, labels (quick)

def _curve_run(folder: Path, finished: bool = True, **config) -> Path:
  folder.mkdir(parents=True)
  cfg = Config.make(**{**RUN, "max_epochs": 3, **config}).flat()
  rundir.write_run(folder, {"config": cfg})
  curve = [{"epoch": e, "train_seconds": 0.5 * e, "loss": 1.0 / e,
            "valid_mrr": 0.1 * e * cfg["learning_rate"] * 100} for e in (1, 2, 3)]
  if finished:
    runfiles.write_json(folder / "results.json", {"curve": curve, "metrics": {}})
  else:
    (folder / "metrics.jsonl").write_text("".join(json.dumps(p) + "\n" for p in curve))
  return folder


def test_plot_two_runs_labelled_by_the_differing_setting(tmp_path):
  a = _curve_run(tmp_path / "a", learning_rate=0.01)
  b = _curve_run(tmp_path / "b", finished=False, learning_rate=0.02, max_epochs=9)
  configs = [plot.read_curve(a)[0], plot.read_curve(b)[0]]
  assert plot.read_curve(b)[1][2]["valid_mrr"] == pytest.approx(0.6)
  assert plot.labels(configs, ["a", "b"]) == ["learning_rate=0.01 max_epochs=3",
                                              "learning_rate=0.02 max_epochs=9"]
  assert plot.labels(configs[:1], ["a"]) == ["a"]
  other_data = [{**configs[0], "data": "CoDEx-S"}, {**configs[0], "data": "CoDEx-M", "dim": 16}]
  assert plot.labels(other_data, ["a", "b"]) == ["data=CoDEx-S dim=8", "data=CoDEx-M dim=16"]
  same_name = [{**configs[0], "data": "kg", "data_spec": {"kind": "folder", "path": p}}
               for p in ("/x/kg", "/y/kg")]
  assert plot.labels(same_name, ["a", "b"]) == ["data=/x/kg", "data=/y/kg"]
  out = plot.plot([str(a), str(b)], tmp_path / "curve.png")
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
  with pytest.raises(FileNotFoundError, match="no run.json"):
    plot.read_curve(tmp_path)


def test_codex_labels_only_for_the_folders_ids(tmp_path):
  entities = tmp_path / "entities.json"
  entities.write_text(json.dumps({
      "Q1": {"label": "Universe", "description": "all"}, "Q2": {"label": "  Earth\tplanet "},
      "Q3": {"label": ""}, "Q4": {"description": "no label"}, "Q5": "not a dict"}))
  assert labels.codex_labels(entities) == {"Q1": "Universe", "Q2": "Earth planet"}
  folder = tmp_path / "codex"
  folder.mkdir()
  (folder / "train.txt").write_text("Q2\tP1\tQ9\n")
  assert labels.used_ids(folder) == {"Q2", "Q9"}
  assert labels.used_ids(tmp_path / "nowhere") is None
  target = labels.write_labels({"Q2": "Earth planet"}, folder)
  assert target.read_text() == "Q2\tEarth planet\n"
  with pytest.raises(FileExistsError, match="--overwrite"):
    labels.write_labels({}, folder)
  (tmp_path / "bad.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match="expected a JSON object"):
    labels.codex_labels(tmp_path / "bad.json")


def test_split_not_summing_to_one_is_one_line(tmp_path):
  fv = flags.FlagValues()
  options.define_config_flags(fv)
  options.define_launch_flags(fv)
  fv(["launch", f"--data_file={tmp_path / 'kg.csv'}", "--split=0.8,0.1,0.2"])
  with pytest.raises(DataError) as err:
    options.data_spec_from_flags(fv)
  assert "\n" not in str(err.value) and "'0.8,0.1,0.2'" in str(err.value)
  assert "sum to 1" in str(err.value)


# ======================================================================== end to end

class _MetricsReader(Callback):
  """Reads metrics.jsonl at every validation: each line is there as soon as it is written."""

  def __init__(self, workdir: Path):
    self.path, self.seen = workdir / "metrics.jsonl", []

  def on_validation(self, v):
    lines = self.path.read_text(encoding="utf-8").splitlines()
    self.seen.append((v.epoch, [faults.strict_json(line) for line in lines]))


@pytest.fixture(scope="module")
def portable(data_dir, tmp_path_factory):
  """A trained run on the tiny folder (3 epochs, a checkpoint per epoch)."""
  workdir = tmp_path_factory.mktemp("portable") / "run"
  config = Config.make(**RUN, max_epochs=3, eval_every=1, checkpoint_every_epochs=1)
  lines = []
  with faults.compilation_cache(_cache(tmp_path_factory)):
    results = train(config, load_folder(data_dir), workdir, log=lines.append,
                    data_spec=_spec(data_dir))
  return workdir, config, results, lines


@pytest.fixture(scope="module")
def tracked(data_dir, tmp_path_factory):
  """The portable run's settings (so the same first three epochs) with TensorBoard, a fake
  W&B, a metrics.jsonl reader, early stopping (``patience=2`` and ``min_delta=1``: no gain
  can count, so it stops after 3 validations), and ranking chunks of 32 that run out of
  device memory above 16 (every compiled ranking function raises XLA's error)."""
  base = tmp_path_factory.mktemp("tracked")
  workdir, tb = base / "run", base / "tb"
  config = Config.make(**RUN, max_epochs=10, eval_every=1, patience=2, min_delta=1.0,
                       tensorboard_dir=str(tb), wandb_project="hale-test", eval_chunk=32)
  fake, reader, lines, calls, stdout = _FakeWandb(), _MetricsReader(workdir), [], [], io.StringIO()
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), \
      faults.compilation_cache(_cache(tmp_path_factory)):
    mp.setitem(sys.modules, "wandb", fake.module)
    _oom_after_compile(mp, 16, calls)
    results = train(config, load_folder(data_dir), workdir, log=lines.append,
                    data_spec=_spec(data_dir), callbacks=[reader])
  return types.SimpleNamespace(workdir=workdir, tb=tb, config=config, results=results,
                               lines=lines, wandb=fake, reader=reader, oom_calls=calls,
                               stdout=stdout.getvalue().splitlines())


@pytest.mark.slow
def test_portable_model_works_without_the_dataset(portable, data_dir, tmp_path,
                                                  tmp_path_factory):
  workdir = portable[0]
  model = hale_jax.load(workdir)
  assert model.labels["entity"] == ENTITY_LABELS and model.labels["relation"] == RELATION_LABELS
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
  moved = data_dir.with_name("moved-away")
  data_dir.rename(moved)
  try:
    assert not data_dir.exists()
    copied = hale_jax.load(copy)
    assert inference.answer_queries(copied, inference.parse_queries(qfile), k=5) == want
    assert copied.evaluate("test") == want_metrics
    env = faults.launcher_env(_cache(tmp_path_factory))
    predict, evaluate, export = _cli_many([
        ("predict", f"--workdir={copy}", f"--queries={qfile}", "--k=5",
         f"--output={tmp_path / 'answers.tsv'}"),
        ("evaluate", f"--workdir={copy}", "--breakdown=relation",
         f"--output={tmp_path / 'metrics.json'}"),
        ("export", f"--workdir={copy}"),
    ], env)
  finally:
    moved.rename(data_dir)
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


@pytest.mark.slow
def test_extending_a_finished_run(portable, data_dir, tmp_path, tmp_path_factory):
  workdir, config, before, _ = portable
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  lines = []
  data = load_folder(data_dir)
  with faults.compilation_cache(_cache(tmp_path_factory)):
    results = train(config.replace(max_epochs=5), data, copy, log=lines.append,
                    data_spec=_spec(data_dir))
  assert any("extending the finished run" in l for l in lines), lines
  third = before["metrics"]["steps"]  # the step of epoch 3's checkpoint: numbered by steps
  assert any(l.startswith(f"resumed from {copy / 'checkpoints' / str(third)}: epoch 3,")
             for l in lines), lines
  assert results["metrics"]["epochs"] == 5 and results["timings"]["resumed"] is True
  assert [c["epoch"] for c in results["curve"]] == [1, 2, 3, 4, 5]
  assert results["curve"][:3] == before["curve"]
  kept = faults.strict_json((copy / runfiles.PREVIOUS_RESULTS).read_text())
  assert kept["metrics"] == before["metrics"] and kept["metrics"]["epochs"] == 3
  metrics = [faults.strict_json(l) for l in (copy / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in metrics] == [1, 2, 3, 4, 5]
  # The same budget again: nothing to do.
  again = []
  assert train(config.replace(max_epochs=5), data, copy, log=again.append,
               data_spec=_spec(data_dir)) == faults.strict_json((copy / "results.json").read_text())
  assert len(again) == 1 and "already finished" in again[0], again


@pytest.mark.slow
def test_metrics_file_is_flushed_at_every_validation(tracked):
  t = tracked
  assert [(epoch, [r["epoch"] for r in records]) for epoch, records in t.reader.seen] == \
      [(1, [1]), (2, [1, 2]), (3, [1, 2, 3])]
  final = [faults.strict_json(l) for l in (t.workdir / "metrics.jsonl").read_text().splitlines()]
  assert final == t.reader.seen[-1][1]
  assert [r["valid_mrr"] for r in final] == [c["valid_mrr"] for c in t.results["curve"]]


@pytest.mark.slow
def test_early_stopping_ends_training_and_tests_the_best(tracked):
  m = tracked.results["metrics"]
  assert m["epochs"] == 3
  assert m["stop_reason"].startswith("early stopping: no valid MRR gain above 1 in 2 "
                                     "validations")
  assert any(l.startswith("stopped after 3 epochs: early stopping") for l in tracked.lines)
  mrrs = [c["valid_mrr"] for c in tracked.results["curve"]]
  assert m["best_epoch"] == 1 + int(np.argmax(mrrs))
  assert m["valid"]["realistic"]["mrr"] == max(mrrs)  # the best-valid parameters were tested


@pytest.mark.slow
def test_progress_lines_of_a_run_show_left_and_eta(tracked):
  progress = [l for l in tracked.lines if l.startswith("epoch ")]
  assert len(progress) == 3
  assert all(" | time left " in l for l in progress), progress


@pytest.mark.slow
def test_tensorboard_events_equal_the_curve(tracked):
  scalars = _event_scalars(tracked.tb)
  curve = tracked.results["curve"]
  assert scalars["valid/mrr"] == [(c["epoch"], float(np.float32(c["valid_mrr"])))
                                  for c in curve]
  assert scalars["train/loss"] == [(c["epoch"], float(np.float32(c["loss"]))) for c in curve]
  test_mrr = tracked.results["metrics"]["test"]["realistic"]["mrr"]
  assert scalars["test_realistic/mrr"] == [(3, float(np.float32(test_mrr)))]


@pytest.mark.slow
def test_wandb_gets_init_log_and_finish(tracked):
  calls, results = tracked.wandb.calls, tracked.results
  assert [c[0] for c in calls] == ["init", "log", "log", "log", "finish"]
  assert calls[0][1] == {"project": "hale-test", "config": tracked.config.flat(),
                         "name": tracked.workdir.name}
  logged = [(c[2], c[1]["valid_mrr"]) for c in calls if c[0] == "log"]
  assert logged == [(c["epoch"], c["valid_mrr"]) for c in results["curve"]]
  assert tracked.wandb.summary["test_mrr"] == results["metrics"]["test"]["realistic"]["mrr"]


@pytest.mark.slow
def test_out_of_memory_during_training_retries_once_per_split(tracked, portable):
  said = [l for l in tracked.lines + tracked.stdout if "out of device memory" in l]
  assert sorted(l.split(":")[0] for l in said) == ["ranking test", "ranking valid"], said
  assert set(tracked.oom_calls) == {32, 16}
  # The same three epochs as the portable run, ranked in chunks of 16 instead of 256.
  want = portable[2]
  assert tracked.results["metrics"]["valid"] == want["metrics"]["valid"]
  assert tracked.results["metrics"]["test"] == want["metrics"]["test"]
  assert [c["valid_mrr"] for c in tracked.results["curve"]] == \
      [c["valid_mrr"] for c in want["curve"]]


@pytest.mark.slow
def test_out_of_memory_retry_is_in_the_runs_log(tracked):
  assert any("out of device memory" in l for l in tracked.lines), tracked.lines


@pytest.mark.slow
def test_data_file_with_columns_split_and_seed(tmp_path, tmp_path_factory):
  g = synthetic.generate(seed=0, num_trees=2, branching=3, depth=3)
  everything = np.concatenate([g.train, g.valid, g.test])
  csv = tmp_path / "kg.csv"
  csv.write_text("relation,tail,head\n" + "".join(
      f"{g.relations[r]},{g.entities[t]},{g.entities[h]}\n" for h, r, t in everything))
  common = [f"--data_file={csv}", "--columns=relation,tail,head", "--header",
            "--dim=8", "--batch_size=64", "--max_epochs=2", "--max_seconds=0"]
  env = faults.launcher_env(_cache(tmp_path_factory))
  (ok,) = _cli_many([
      ("launch", *common, "--split=0.7,0.15,0.15", "--split_seed=3",
       f"--workdir={tmp_path / 'run'}")], env)
  assert ok.returncode == 0, ok.stderr
  from hale_jax import own_data  # pylint: disable=import-outside-toplevel
  want, info = own_data.load_triples_file(csv, "relation,tail,head", fractions="0.7,0.15,0.15",
                                          seed=3, header=True)
  results = faults.strict_json((tmp_path / "run" / "results.json").read_text())
  ds = results["dataset"]
  assert (ds["train"], ds["valid"], ds["test"]) == (len(want.train), len(want.valid),
                                                    len(want.test))
  assert ds["entities"] == g.num_entities and info.read == len(everything)
  assert abs(ds["valid"] - 0.15 * len(everything)) <= 5
  spec = rundir.read_run(tmp_path / "run")["data"]
  assert spec["kind"] == "file" and spec["seed"] == 3 and spec["fractions"] == [0.7, 0.15, 0.15]
  model = hale_jax.load(tmp_path / "run")
  np.testing.assert_array_equal(model.data.test, want.test)


@pytest.mark.slow
def test_labels_command(tmp_path):
  folder = _dataset(tmp_path / "codex")
  (folder / "entity_labels.tsv").unlink()
  entities = tmp_path / "entities.json"
  entities.write_text(json.dumps({"t0": {"label": "Root Zero"}, "t1.2": {"label": "T one two"},
                                  "Q999": {"label": "not in the folder"}}))
  cmd = [sys.executable, "-m", "hale_jax.labels", f"--codex_entities={entities}",
         f"--output={folder}"]
  env = faults.launcher_env()
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "2 entity labels written" in proc.stdout
  assert (folder / "entity_labels.tsv").read_text() == "t0\tRoot Zero\nt1.2\tT one two\n"


def test_relation_breakdown_shows_labels():
  from hale_jax import evaluate  # pylint: disable=import-outside-toplevel
  metrics = {"mrr": 0.5, "mr": 3.0, "hits@1": 0.25, "hits@3": 0.5, "hits@10": 1.0}
  groups = {"P1412": {"count": 4, "realistic": metrics},
            "P17": {"count": 2, "realistic": metrics}}
  rows = evaluate.format_breakdown(groups, "relation", {"P1412": "languages spoken"})
  lines = rows.splitlines()
  assert lines[1].startswith("P1412 (languages spoken) ") and lines[2].startswith("P17 ")
  assert len({len(l) for l in lines}) == 1  # one column width
