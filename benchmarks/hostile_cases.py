"""The cases of ``benchmarks/hostile.py``: ``CASES = {name: (expected verdict, function)}``.

Each function takes the :class:`~benchmarks.hostile.Lab`, does one hostile thing through the
command lines, checks everything it should (raising :class:`~benchmarks.hostile.Failed`), and
returns its verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.faults import strict_json
from benchmarks.hostile import OK, RECOVERED, REFUSED, Lab, check, listing, ok, one_line


def _test_metrics(run: Path) -> dict:
  return strict_json((run / "results.json").read_text())["metrics"]["test"]


def _evaluated(lab: Lab, run: Path, **kw) -> tuple[subprocess.CompletedProcess, dict]:
  out = run.parent / "metrics.json"
  proc = ok(lab.cli("evaluate", f"--workdir={run}", f"--output={out}", "--overwrite", **kw))
  return proc, strict_json(out.read_text())["metrics"]


def _warned(proc: subprocess.CompletedProcess, *needles: str) -> None:
  text = proc.stdout + proc.stderr
  lines = [l for l in text.splitlines() if l.startswith("warning:")]
  check(bool(lines), f"no warning line: {text[-300:]}")
  for needle in needles:
    check(any(needle in l for l in lines), f"no warning names {needle!r}: {lines}")


def _recovers_evaluation(lab: Lab, run: Path, *needles: str) -> str:
  want = _test_metrics(run)
  proc, got = _evaluated(lab, run)
  _warned(proc, *needles)
  check(got == want, f"metrics differ from training's: {got['realistic']} vs {want['realistic']}")
  return RECOVERED


def _refuses(lab: Lab, folder: Path, module: str, args: list[str], *needles: str,
             **cli) -> str:
  """The command is refused in one line holding ``needles``, and nothing under ``folder``
  changed; ``cli``: keywords of :meth:`Lab.cli` (``env``, ``fsize``)."""
  before = listing(folder)
  one_line(lab.cli(module, *args, **cli), *needles)
  check(listing(folder) == before, f"files under {folder} changed")
  return REFUSED


def _edit_params(run: Path, edit: Callable[[dict], None]) -> None:
  with np.load(run / "best_params.npz") as f:
    arrays = {k: f[k] for k in f.files}
  edit(arrays)
  with open(run / "best_params.npz", "wb") as f:
    np.savez(f, **arrays)


def _cut(path: Path, keep: float = 0.5) -> None:
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep)])


# ----------------------------------------------------------------------------- data lost

def workdir_of_user_files(lab: Lab) -> str:
  folder = lab.folder("user-files")
  (folder / "entities.tsv").write_text("my own list\n")
  (folder / "metrics.jsonl").write_text("my own notes\n")
  return _refuses(lab, folder, "launch", [f"--data_dir={lab.root / 'tiny'}",
                                          *lab.train_args(folder)],
                  "not a hale_jax run's", "entities.tsv")


def overwrite_folder_without_run_json(lab: Lab) -> str:
  folder = lab.folder("overwrite-user")
  for name in ("checkpoints/model.pt", "best/keep.txt"):
    (folder / name).parent.mkdir()
    (folder / name).write_text("precious")
  return _refuses(lab, folder, "launch", [f"--data_dir={lab.root / 'tiny'}",
                                          *lab.train_args(folder, "--overwrite")],
                  "not a hale_jax run's")


def _queries(folder: Path, lines: list[str]) -> Path:
  path = folder / "queries.tsv"
  path.write_text("".join(line + "\n" for line in lines))
  return path


def predict_overwrite_disk_full(lab: Lab) -> str:
  """A larger answer replacing an earlier output, with files capped at the earlier output's
  size (``ulimit -f``: the disk fills up part-way)."""
  run = lab.copy_of_base("predict-full")
  queries = _queries(run.parent, [f"t{i}\tparent_of\t?" for i in range(2)] * 100)
  out = run.parent / "answers.tsv"
  ok(lab.cli("predict", f"--workdir={run}", f"--queries={queries}", f"--output={out}"))
  return _refuses(lab, run.parent, "predict", [f"--workdir={run}", f"--queries={queries}",
                                               f"--output={out}", "--overwrite", "--k=30"],
                  str(out), "cannot be written", fsize=out.stat().st_size)


def export_into_run_folder(lab: Lab) -> str:
  run = lab.copy_of_base("export-into")
  _refuses(lab, run, "export", [f"--workdir={run}", "--format=tsv", f"--output={run}",
                                "--overwrite"], "is the run folder")
  _refuses(lab, run, "export", [f"--workdir={run}", "--format=npz",
                                f"--output={run / 'entities.tsv'}", "--overwrite"],
           "is entities.tsv of the run")
  _evaluated(lab, run)
  return REFUSED


# ----------------------------------------------------------------------------- wrong answers

def params_table_cut_short(lab: Lab) -> str:
  run = lab.copy_of_base("cut-table")
  _edit_params(run, lambda a: a.update(entity=a["entity"][:5]))
  return _recovers_evaluation(lab, run, "best_params.npz", "shape")


def nan_params(lab: Lab) -> str:
  run = lab.copy_of_base("nan-params")
  _edit_params(run, lambda a: a["entity"].__setitem__((0, 0), np.nan))
  return _recovers_evaluation(lab, run, "best_params.npz", "NaN")


def test_ids_shifted(lab: Lab) -> str:
  run = lab.copy_of_base("shifted-ids")
  test = np.load(run / "triples" / "test.npy") + 1000
  np.save(run / "triples" / "test.npy", test)
  return _refuses(lab, run, "evaluate", [f"--workdir={run}"], "test triples",
                  "entity ids outside")


def overwrite_drops_old_labels(lab: Lab) -> str:
  run = lab.copy_of_base("old-labels")
  (run / "notes.txt").write_text("mine")
  plain = lab.dataset(lab.folder("no-labels") / "data", labels=False)
  ok(lab.cli("launch", f"--data_dir={plain}", *lab.train_args(run, "--overwrite")))
  check(not (run / "entity_labels.tsv").exists(), "the old entity labels were kept")
  check((run / "notes.txt").read_text() == "mine", "--overwrite touched a file not the run's")
  return OK


# ----------------------------------------------------------------------------- resuming

def torn_metrics_line(lab: Lab) -> str:
  run = lab.copy_of_base("torn-metrics")
  with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write('{"epoch": 3, "step": 12, "train_seco')
  proc = ok(lab.cli("launch", f"--data_dir={lab.root / 'tiny'}",
                    *lab.train_args(run, "--max_epochs=3")))
  _warned(proc, "metrics.jsonl")
  epochs = [strict_json(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()]
  check(epochs == [1, 2, 3], f"metrics.jsonl holds epochs {epochs}")
  ok(lab.cli("plot", f"--workdir={run}", f"--output={run.parent / 'curve.png'}"))
  return RECOVERED


def truncated_run_json(lab: Lab) -> str:
  run = lab.copy_of_base("cut-run-json")
  _cut(run / "run.json")
  _refuses(lab, run, "launch", [f"--data_dir={lab.root / 'tiny'}", *lab.train_args(run)],
           "run.json: cannot be read")
  return _refuses(lab, run, "evaluate", [f"--workdir={run}"], "run.json: cannot be read")


def truncated_results_json(lab: Lab) -> str:
  run = lab.copy_of_base("cut-results")
  want = _test_metrics(run)
  _cut(run / "results.json")
  proc = ok(lab.cli("launch", f"--data_dir={lab.root / 'tiny'}", *lab.train_args(run)))
  _warned(proc, "results.json")
  check(_test_metrics(run) == want, "the test metrics changed")
  return RECOVERED


def newline_in_name(lab: Lab) -> str:
  folder = lab.folder("newline-name")
  rows = [f"e{i},r{i % 3},e{(i * 7) % 40}" for i in range(200)]
  rows[9] = '"two\nlines",r0,e1'
  (folder / "kg.csv").write_text("\n".join(rows) + "\n")
  return _refuses(lab, folder, "launch", [f"--data_file={folder / 'kg.csv'}",
                                          *lab.train_args(folder / "run")], "kg.csv:10")


# ----------------------------------------------------------------------------- loading alone

_OPENS = """
import os, sys
import jax, jax.numpy as jnp
import hale_jax, hale_jax.trained_model
jax.devices(); jnp.zeros(1).block_until_ready()
run = os.path.realpath(sys.argv[1])
opened = []
sys.addaudithook(lambda e, a: opened.append(a[0]) if e == "open" and isinstance(a[0], str) else None)
model = hale_jax.load(run)
model.evaluate("test")
model.predict_tails("t0", "parent_of", k=3)
code = (".py", ".pyc", ".so")
jax_cache = jax.config.jax_compilation_cache_dir  # JAX's own compile cache, where the caller set one
outside = sorted({p for p in opened if not os.path.realpath(p).startswith(run + os.sep)
                  and not p.endswith(code) and "__pycache__" not in p
                  and not (jax_cache and os.path.realpath(p).startswith(os.path.realpath(jax_cache)))})
print("OUTSIDE", outside)
"""


def offline_load(lab: Lab) -> str:
  root = lab.folder("offline")
  lab.dataset(root / "datasets" / "CoDEx-S")
  run = root / "run"
  ok(lab.cli("launch", "--dataset=CoDEx-S", *lab.train_args(run),
             env={**lab.env, "HALE_DATA_DIR": str(root / "datasets")}))
  cache = root / "empty-cache"
  env = {**lab.env, "HALE_CACHE_DIR": str(cache)}
  for module, args in (("evaluate", []), ("export", [f"--output={root / 'e.npz'}"]),
                       ("predict", ["--head=t0", "--relation=parent_of"])):
    proc = ok(lab.cli(module, f"--workdir={run}", *args, env=env))
    check("download" not in (proc.stdout + proc.stderr).lower(), f"{module} spoke of a download")
  check(not cache.exists(), "a cache folder was made")
  proc = ok(subprocess.run([sys.executable, "-c", _OPENS, str(run)], env=env, cwd=lab.root,
                           capture_output=True, text=True, timeout=300))
  check("OUTSIDE []" in proc.stdout, f"files opened outside the run folder: {proc.stdout[-400:]}")
  return OK


def data_path_dev_zero(lab: Lab) -> str:
  run = lab.copy_of_base("dev-zero")
  spec = json.loads((run / "run.json").read_text())
  spec["data"] = {"kind": "file", "path": "/dev/zero"}
  (run / "run.json").write_text(json.dumps(spec))
  want = _test_metrics(run)
  _, got = _evaluated(lab, run, timeout=120)
  check(got == want, "other metrics")
  return OK


def label_file_linked_outside(lab: Lab) -> str:
  run = lab.copy_of_base("linked-labels")
  secret = run.parent / "secret.tsv"
  secret.write_text("t0\tSecret Label\n")
  (run / "entity_labels.tsv").unlink()
  (run / "entity_labels.tsv").symlink_to(secret)
  proc = ok(lab.cli("predict", f"--workdir={run}", "--head=t0", "--relation=parent_of"))
  check("Secret" not in proc.stdout, "the linked file was read")
  _warned(proc, "link")
  return RECOVERED


# ----------------------------------------------------------------------------- one line

def truncated_entities_tsv(lab: Lab) -> str:
  run = lab.copy_of_base("cut-entities")
  _cut(run / "entities.tsv", 0.53)
  return _refuses(lab, run, "evaluate", [f"--workdir={run}"], "entities.tsv")


def truncated_triples(lab: Lab) -> str:
  run = lab.copy_of_base("cut-triples")
  _cut(run / "triples" / "valid.npy")
  return _refuses(lab, run, "evaluate", [f"--workdir={run}"], "triples")


def checkpoint_meta_missing_key(lab: Lab) -> str:
  run = lab.copy_of_base("meta-key")
  newest = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  meta = run / "checkpoints" / str(newest) / "meta" / "metadata"
  doc = json.loads(meta.read_text())
  del doc["best_epoch"]
  meta.write_text(json.dumps(doc))
  proc = ok(lab.cli("launch", f"--data_dir={lab.root / 'tiny'}",
                    *lab.train_args(run, "--max_epochs=3")))
  check("lacks best_epoch" in proc.stdout and "resumed from" in proc.stdout,
        f"no line on the checkpoint: {proc.stdout[-400:]}")
  check(strict_json((run / "results.json").read_text())["metrics"]["epochs"] == 3, "not 3 epochs")
  return RECOVERED


def corrupt_best_of_unfinished_run(lab: Lab) -> str:
  run = lab.copy_of_base("bad-best")
  (run / "best_params.npz").unlink()
  (run / "results.json").unlink()
  for f in (run / "best").rglob("*"):
    if f.is_file() and f.parent.name != "best":
      f.write_bytes(b"garbage")
  return _refuses(lab, run, "evaluate", [f"--workdir={run}"], "best")


def run_json_is_a_list(lab: Lab) -> str:
  run = lab.copy_of_base("list-run-json")
  (run / "run.json").write_text("[]")
  _refuses(lab, run, "evaluate", [f"--workdir={run}"], "run.json", "not a hale_jax run spec")
  return _refuses(lab, run, "launch", [f"--data_dir={lab.root / 'tiny'}", *lab.train_args(run),
                                       "--overwrite"], "run.json")


def truncated_study_db(lab: Lab) -> str:
  folder = lab.folder("study")
  (folder / "study.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 3)
  return _refuses(lab, folder, "sweep", [f"--study_dir={folder}", "--report"], "study.db")


def _refused_flag(lab: Lab, name: str, flag: str, *needles: str) -> str:
  folder = lab.folder(name)
  run = folder / "run"
  _refuses(lab, folder, "launch", [f"--data_dir={lab.root / 'tiny'}", *lab.train_args(run),
                                   flag], *needles)
  check(not run.exists(), "the workdir was made")
  return REFUSED


def nan_learning_rate(lab: Lab) -> str:
  return _refused_flag(lab, "nan-lr", "--learning_rate=nan", "--learning_rate", "finite")


def huge_dim(lab: Lab) -> str:
  return _refused_flag(lab, "huge-dim", "--dim=100000000", "--dim 100000000", "GB", "lower --dim")


def negative_checkpoint_seconds(lab: Lab) -> str:
  return _refused_flag(lab, "neg-ckpt", "--checkpoint_every_seconds=-1",
                       "--checkpoint_every_seconds")


def _dataset_with(lab: Lab, name: str, line: int, make: Callable[[str], str]) -> str:
  folder = lab.dataset(lab.folder(name) / "data")
  train = folder / "train.txt"
  lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
  lines[line - 1] = make(lines[line - 1])
  train.write_text("".join(lines), encoding="utf-8")
  return _refuses(lab, folder.parent, "launch", [f"--data_dir={folder}",
                                                 *lab.train_args(folder.parent / "run")],
                  f"train.txt:{line}")


def byte_order_mark_inside(lab: Lab) -> str:
  return _dataset_with(lab, "bom-inside", 10, lambda line: "\ufeff" + line)


def line_separator_in_name(lab: Lab) -> str:
  return _dataset_with(lab, "u2028", 7, lambda line: line.replace("\t", "\u2028x\t", 1))


def unknown_name_in_queries(lab: Lab) -> str:
  run = lab.copy_of_base("unknown-query")
  queries = _queries(run.parent, ["t0\tparent_of\t?", "?\tparent_of\tt1", "nobody\tparent_of\t?"])
  _refuses(lab, run.parent, "predict", [f"--workdir={run}", f"--queries={queries}",
                                        f"--output={run.parent / 'out.tsv'}"],
           f"{queries}:3", "nobody")
  return REFUSED


def data_dir_variable_points_nowhere(lab: Lab) -> str:
  folder = lab.folder("no-data-dir")
  cache = folder / "cache"
  env = {**lab.env, "HALE_DATA_DIR": str(folder / "missing"), "HALE_CACHE_DIR": str(cache)}
  _refuses(lab, folder, "launch", ["--dataset=CoDEx-S", *lab.train_args(folder / "run")],
           "HALE_DATA_DIR", env=env)
  check(not cache.exists(), "a cache folder was made")
  return REFUSED


def export_to_unwritable_place(lab: Lab) -> str:
  run = lab.copy_of_base("export-unwritable")
  target = "/sys/hale-export.npz" if os.geteuid() == 0 else "/hale-export.npz"
  return _refuses(lab, run, "export", [f"--workdir={run}", f"--output={target}"],
                  "cannot be written")


CASES: dict[str, tuple[str, Callable[[Lab], str]]] = {
    f.__name__: (verdict, f) for verdict, f in [
        (REFUSED, workdir_of_user_files), (REFUSED, overwrite_folder_without_run_json),
        (REFUSED, predict_overwrite_disk_full), (REFUSED, export_into_run_folder),
        (RECOVERED, params_table_cut_short), (RECOVERED, nan_params),
        (REFUSED, test_ids_shifted), (OK, overwrite_drops_old_labels),
        (RECOVERED, torn_metrics_line), (REFUSED, truncated_run_json),
        (RECOVERED, truncated_results_json), (REFUSED, newline_in_name),
        (OK, offline_load), (OK, data_path_dev_zero), (RECOVERED, label_file_linked_outside),
        (REFUSED, truncated_entities_tsv), (REFUSED, truncated_triples),
        (RECOVERED, checkpoint_meta_missing_key), (REFUSED, corrupt_best_of_unfinished_run),
        (REFUSED, run_json_is_a_list), (REFUSED, truncated_study_db),
        (REFUSED, nan_learning_rate), (REFUSED, huge_dim),
        (REFUSED, negative_checkpoint_seconds), (REFUSED, byte_order_mark_inside),
        (REFUSED, line_separator_in_name), (REFUSED, unknown_name_in_queries),
        (REFUSED, data_dir_variable_points_nowhere), (REFUSED, export_to_unwritable_place)]}
