"""What several test files share and no benchmark needs: a small dataset folder with labels, a
run folder written by hand, the launcher in this process and on the command line (commands
started together, sharing JAX's persistent compilation cache), fakes of W&B and of device
memory running out.  The fixtures over them are in ``tests/conftest.py``; the helpers that
benchmarks use too (``write_folder``, ``launcher_env``, ``compilation_cache``,
``strict_json``) stay in ``benchmarks/faults.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from hale_jax import dataspec, models, rundata
from hale_jax import rundir, runfiles, synthetic
from hale_jax.callbacks import Callback, Validation
from hale_jax.config import Config
from hale_jax.data import load_folder
from hale_jax.ranking import Evaluator

from benchmarks import faults


def launcher():
  """``hale_jax.launch`` with its flags defined on absl's global FLAGS (once per process: the
  launcher defines them only when it runs as a command)."""
  from hale_jax import launch  # pylint: disable=import-outside-toplevel
  if "max_epochs" not in launch.FLAGS:
    launch.define_flags()
  return launch


REPO = Path(__file__).resolve().parents[1]


RENAME = {"child_of": "parent_of_reverse"}


ENTITY_LABELS = {"t0": "Root Zero", "t1": "Root One", "t0.0": "Twin", "t0.1": "Twin",
                 "t0.2": "Lone Child"}


RELATION_LABELS = {"parent_of": "has child", "sibling_of": "is sibling of"}


RUN = dict(model="RotL", dim=8, batch_size=64, max_seconds=0, learning_rate=0.01)


def quiet(line):
  del line


def labelled_dataset(folder: Path) -> Path:
  """The tiny synthetic graph (84 entities) as a folder, with label files."""
  faults.write_folder(synthetic.generate(seed=0, num_trees=2, branching=3, depth=3), folder,
                      RENAME)
  (folder / "entity_labels.tsv").write_text(
      "".join(f"{k}\t{v}\n" for k, v in ENTITY_LABELS.items()), encoding="utf-8")
  (folder / "relation_labels.tsv").write_text(
      "".join(f"{k}\t{v}\n" for k, v in RELATION_LABELS.items()), encoding="utf-8")
  return folder


def folder_spec(folder: Path) -> dataspec.Folder:
  return dataspec.Folder(str(folder.resolve()))


def fake_run(workdir: Path, labelled_data_dir: Path, seed: int = 0) -> Path:
  """A run folder as a finished run leaves it, with random RotL parameters instead of trained
  ones (run.json, vocabularies, triples, label files, best_params.npz)."""
  data = load_folder(labelled_data_dir)
  config = Config.make(**RUN, max_epochs=1)
  workdir.mkdir(parents=True)
  spec = rundir.run_spec(config, data, folder_spec(labelled_data_dir))
  rundir.write_run(workdir, spec)
  rundata.keep_data(workdir, data, folder_spec(labelled_data_dir))
  params = models.init_params("RotL", jax.random.key(seed), data.num_entities,
                              data.num_relations, 8, init_scale=0.3)
  rng = np.random.default_rng(seed)
  arrays = {k: np.asarray(v) for k, v in params.items()}
  arrays["scale"] = rng.normal(0.0, 0.7, arrays["scale"].shape).astype(np.float32)
  arrays["alpha"] = rng.uniform(0.5, 1.5, arrays["alpha"].shape).astype(np.float32)
  runfiles.write_npz(workdir / runfiles.PARAMS, arrays)
  return workdir


def stop_after(polls: int):
  """A ``should_stop`` for ``loop.train`` that asks to stop at its ``polls``-th call."""
  calls = []

  def should_stop():
    calls.append(None)
    return "test stop" if len(calls) == polls else None
  return should_stop


def compile_cache_dir(tmp_path_factory) -> Path:
  """The test run's one JAX compilation cache (``tests/conftest.py`` sets it for the workers and
  the commands they start); a folder of this worker's where it is not set."""
  shared = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  return Path(shared) if shared else tmp_path_factory.getbasetemp() / "jax-cache"


def start_command(module: str, *args: str, env: dict) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", f"hale_jax.{module}", *args], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cli_many(calls: list[tuple], env: dict) -> list[subprocess.CompletedProcess]:
  """Runs independent commands ``(module, *args)`` at the same time; their results in order."""
  procs = [start_command(call[0], *call[1:], env=env) for call in calls]
  out = []
  for call, proc in zip(calls, procs):
    stdout, stderr = proc.communicate(timeout=300)
    out.append(subprocess.CompletedProcess(call, proc.returncode, stdout, stderr))
  return out


def oom_after_compile(monkeypatch, above: int, calls: list):
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


def make_validation(epoch, mrr=0.1, loss=1.0, train_seconds=None, eval_seconds=None,
                max_epochs=10, max_seconds=0.0) -> Validation:
  metrics = {mode: {"mr": 10.0, "mrr": mrr, "hits@1": 0.0, "hits@3": 0.1, "hits@10": 0.5}
             for mode in ("realistic", "pessimistic", "optimistic")}
  return Validation(epoch=epoch, step=13 * epoch,
                    train_seconds=2.0 * epoch if train_seconds is None else train_seconds,
                    eval_seconds=0.5 * epoch if eval_seconds is None else eval_seconds,
                    loss=loss, learning_rate=0.01, triples_per_second=1000.0, metrics=metrics,
                    best=metrics["realistic"], best_epoch=epoch, improved=True, params=None,
                    max_seconds=max_seconds, max_epochs=max_epochs)


def make_start_info(epoch=0, curve=()):
  return {"config": None, "workdir": None, "epoch": epoch, "epoch_step": 0, "step": 13 * epoch,
          "train_seconds": 2.0 * epoch, "eval_seconds": 0.5 * epoch, "curve": list(curve),
          "steps_per_epoch": 13}


class FakeWandb:
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


class MetricsReader(Callback):
  """Reads metrics.jsonl at every validation: each line is there as soon as it is written."""

  def __init__(self, workdir: Path):
    self.path, self.seen = workdir / "metrics.jsonl", []

  def on_validation(self, v):
    lines = self.path.read_text(encoding="utf-8").splitlines()
    self.seen.append((v.epoch, [faults.strict_json(line) for line in lines]))


COMMON = ("--dim=8", "--batch_size=64", "--max_seconds=0", "--learning_rate=0.01")


NUM_ENTITIES = 84


EPOCH = 13  # steps per epoch at batch 64 (418 training triples); checkpoints count steps


def tiny_graph():
  return synthetic.generate(seed=0, num_trees=2, branching=3, depth=3)


def launch_args(data_dir, workdir, *extra) -> tuple:
  return ("launch", f"--data_dir={data_dir}", f"--workdir={workdir}", *COMMON, *extra)


def one_line_error(proc, status: int = 2) -> str:
  assert proc.returncode == status, (proc.args, proc.stdout[-2000:], proc.stderr)
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  return lines[0]


def assert_ok(proc) -> subprocess.CompletedProcess:
  assert proc.returncode == 0, (proc.args, proc.stdout[-3000:], proc.stderr)
  assert "Traceback" not in proc.stderr, proc.stderr
  return proc


def checkpoint_steps(folder: Path) -> list[int]:
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def file_listing(folder: Path) -> dict[str, bytes]:
  """Every file under ``folder`` with its bytes (the lock file aside)."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file() and p.name != runfiles.LOCK}


def assert_strict_outputs(workdir: Path) -> None:
  """No NaN or Infinity anywhere: every JSON file parses strictly, arrays are finite."""
  for path in workdir.rglob("*"):
    if not path.is_file():
      continue
    if path.suffix == ".json" or path.name in ("metadata", "_CHECKPOINT_METADATA"):
      faults.strict_json(path.read_text(encoding="utf-8"))
    elif path.suffix == ".jsonl":
      for line in path.read_text(encoding="utf-8").splitlines():
        faults.strict_json(line)
    elif path.suffix == ".npz":
      with np.load(path) as f:
        for k in f.files:
          if f[k].dtype.kind == "f":
            assert np.all(np.isfinite(f[k])), (path, k)


class NoSignals:
  """Stands in for ``StopRequest``: the in-process launcher must not take pytest's signals."""

  def __call__(self):
    return None

  def exit_code(self):
    return 143


def launch_in_process(monkeypatch, capsys, *args) -> tuple[int, str, str]:
  from hale_jax import cli  # pylint: disable=import-outside-toplevel
  launch = launcher()
  monkeypatch.setattr(launch, "StopRequest", NoSignals)
  monkeypatch.setattr(cli, "exit_now", sys.exit)  # not os._exit: pytest runs in this process
  capsys.readouterr()
  try:
    launch.FLAGS(["launch", *args])
    with pytest.raises(SystemExit) as exit_:
      launch.main(["launch"])
  finally:
    launch.FLAGS.unparse_flags()
  out = capsys.readouterr()
  return exit_.value.code, out.out, out.err


def quirky_dataset(folder: Path) -> Path:
  """The tiny graph with a byte-order mark and a field with a trailing space (line 5)."""
  faults.write_folder(tiny_graph(), folder)
  train_txt = folder / "train.txt"
  lines = train_txt.read_text(encoding="utf-8").splitlines(keepends=True)
  h, r, t = lines[4].rstrip("\n").split("\t")
  lines[4] = f"{h}\t{r}\t{t} \n"
  train_txt.write_text("\ufeff" + "".join(lines), encoding="utf-8")
  return folder
