"""Fault injection: SIGKILL a training run at random moments and check that resuming loses nothing.

    python -m benchmarks.faults [--kills=10] [--seed=0] [--epochs=N] [--workdir=DIR] [--keep] [-v]

Issue 33's acceptance check.  On the generated graph (``--dataset=synthetic``, RotL d=16, batch
32: about 0.1 s of training per epoch in segments of about 20 ms, a validation and a checkpoint
after every epoch, and one every 0.1 s also inside epochs) it

1. runs one uninterrupted training command to the end and keeps its ``results.json``;
2. runs the same command in a fresh workdir and kills it with SIGKILL ``--kills`` times, each
   time restarting the command; the moments are drawn from ``--seed`` and aimed at seven phases:

   - ``compile``: a random delay after the ``device ...`` line (printed just before compiling),
     within the uninterrupted run's compile time;
   - ``checkpoint``: as soon as (plus 0-10 ms) an orbax ``<step>.orbax-checkpoint-tmp`` folder
     appears in ``checkpoints/``, i.e. while a checkpoint is being written;
   - ``validation``: the same in ``best/``: a validation that improved the best valid MRR is
     saving the best parameters (ranking the valid split took the few ms before);
   - ``epoch``: a random delay after a checkpoint step is complete, within one epoch's training
     time;
   - ``mid-epoch``: as soon as (plus 0-10 ms) a checkpoint taken inside an epoch (its step not a
     multiple of the steps per epoch) is complete, while that epoch's next segments run: the
     restart continues from inside the epoch;
   - ``final checkpoint``: while the checkpoint of the last epoch is being written (as
     ``checkpoint``, once the last epoch's progress line is out);
   - ``final evaluation``: a random delay after the ``stopped after ...`` line, within the
     first quarter of the time the uninterrupted run took from that line to ``results written``
     (ranking valid and test with the best parameters, writing ``best_params.npz`` and
     ``results.json``);

   about one kill in five is a final one (the first ``final checkpoint``, the others ``final
   evaluation``); they come last, since once the run has finished nothing else can be hit;
3. checks the outcome: the final ``results.json`` metrics equal the uninterrupted run's exactly
   (and the validation curve, ``metrics.jsonl`` and ``best_params.npz``), every checkpoint step
   in ``checkpoints/`` and ``best/`` restores, no temporary file or folder is left, and
   ``run.json``, ``results.json``, ``best_params.npz`` and the other outputs are complete.

It prints one line per kill, then ``N kills, M resumes (I inside an epoch), metrics identical, K
files lost``: ``M`` counts the restarts that continued from a checkpoint ("resumed from ..." in
their output; a restart after a kill that came before the first checkpoint starts over instead),
``I`` those that continued from a checkpoint taken inside an epoch, ``K`` the
outputs missing or incomplete plus the checkpoint steps that do not restore.  The exit status
is 0 only when the metrics are identical, nothing is lost, no temporary file is left and every
``mid-epoch`` kill that landed after its checkpoint was followed by a resume inside an epoch.  No
compilation cache is used, so a ``compile`` kill lands in a real compile.  About 1.5 minutes for
10 kills on 2 CPU cores (25 s for 3).

The epoch budget is 4 more than the kills aimed before the end (each of those moves the run on
by one epoch at most).  The helpers :func:`write_folder`, :func:`launcher_env`,
:func:`compilation_cache` and :func:`strict_json` are shared with the tests
(``tests/conftest.py``, ``tests/helpers.py`` and the test files that train on the command line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
PHASES = ("compile", "epoch", "checkpoint", "validation", "mid-epoch", "final checkpoint",
          "final evaluation")
MID_PHASES = PHASES[:5]
OUTPUTS = ("run.json", "results.json", "best_params.npz", "metrics.jsonl", "entities.tsv",
           "relations.tsv", "triples/train.npy", "triples/valid.npy", "triples/test.npy")
TMP_MARKERS = (".tmp", "orbax-checkpoint-tmp")
TIMEOUT = 300


# ----------------------------------------------------------------------------------- helpers

def write_folder(data, folder: str | os.PathLike, rename: dict[str, str] | None = None) -> Path:
  """Writes a :class:`hale_jax.data.KGData` as a dataset folder (``train.txt``, ``valid.txt``,
  ``test.txt``), relations renamed by ``rename``; returns the folder."""
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  rename = rename or {}
  for split in ("train", "valid", "test"):
    (folder / f"{split}.txt").write_text("".join(
        f"{data.entities[h]}\t{rename.get(data.relations[r], data.relations[r])}\t"
        f"{data.entities[t]}\n" for h, r, t in data.split(split)), encoding="utf-8")
  return folder


def launcher_env(cache_dir: str | os.PathLike | None = None, **extra: str) -> dict[str, str]:
  """The environment of a command-line run: CPU, unbuffered output, this checkout importable;
  with ``cache_dir``, JAX's persistent compilation cache there (every compile cached), which
  makes a repeated command start in a fraction of the time and changes no result."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
  if cache_dir is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.update(extra)
  return env


@contextlib.contextmanager
def compilation_cache(cache_dir: str | os.PathLike | None):
  """Within the block, this process also uses JAX's persistent compilation cache in
  ``cache_dir`` (as :func:`launcher_env` gives a command), every compile cached; the settings
  before are restored afterwards.  For tests that train in-process and on the command line with
  the same shapes.  Does nothing with ``cache_dir=None`` or where JAX's (private) cache module
  differs."""
  try:
    import jax  # pylint: disable=import-outside-toplevel
    from jax._src import compilation_cache as cc  # pylint: disable=import-outside-toplevel
    reset = cc.reset_cache
  except (ImportError, AttributeError):
    reset = None
  if cache_dir is None or reset is None:
    yield
    return
  settings = {"jax_compilation_cache_dir": str(cache_dir),
              "jax_persistent_cache_min_compile_time_secs": 0.0,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  before = {name: getattr(jax.config, name) for name in settings}
  for name, value in settings.items():
    jax.config.update(name, value)
  reset()
  try:
    yield
  finally:
    for name, value in before.items():
      jax.config.update(name, value)
    reset()


def _refuse_constant(name: str):
  raise ValueError(f"non-standard JSON constant {name}")


def strict_json(text: str) -> Any:
  """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``."""
  return json.loads(text, parse_constant=_refuse_constant)


# ------------------------------------------------------------------------------- the process

class Process:
  """A launcher process whose output lines are read, with their arrival times, by a thread."""

  def __init__(self, cmd: list[str], env: dict[str, str]):
    self.start = time.monotonic()
    self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=env, cwd=REPO)
    self.lines: list[tuple[float, str]] = []
    self.done = False
    self._cond = threading.Condition()
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self) -> None:
    for line in self.proc.stdout:
      with self._cond:
        self.lines.append((time.monotonic(), line.rstrip("\n")))
        self._cond.notify_all()
    with self._cond:
      self.done = True
      self._cond.notify_all()

  def wait_line(self, match: Callable[[str], bool], timeout: float = TIMEOUT) -> float | None:
    """The arrival time of the first line that ``match``es, or None once the output ended."""
    deadline = time.monotonic() + timeout
    with self._cond:
      while True:
        for t, line in self.lines:
          if match(line):
            return t
        if self.done or time.monotonic() > deadline:
          return None
        self._cond.wait(0.05)

  def seen(self, prefix: str) -> bool:
    with self._cond:
      return any(line.startswith(prefix) for _, line in self.lines)

  def alive(self) -> bool:
    return self.proc.poll() is None

  def kill(self) -> bool:
    """SIGKILL; False if the process had already ended."""
    if not self.alive():
      return False
    self.proc.send_signal(signal.SIGKILL)
    self.proc.wait()
    return True

  def finish(self, timeout: float = TIMEOUT) -> int:
    rc = self.proc.wait(timeout)
    self._reader.join(10)
    return rc

  def text(self) -> str:
    with self._cond:
      return "\n".join(line for _, line in self.lines)


def command(workdir: Path, epochs: int) -> list[str]:
  return [sys.executable, "-m", "hale_jax.launch", "--dataset=synthetic", f"--workdir={workdir}",
          "--dim=16", "--batch_size=32", f"--max_epochs={epochs}", "--max_seconds=0",
          "--eval_every=1", "--checkpoint_every_epochs=1", "--checkpoint_every_seconds=0.1",
          "--segment_seconds=0.02", "--max_to_keep=3"]


def _tmp_folders(folder: Path) -> set[str]:
  try:
    return {p.name for p in folder.iterdir() if "orbax-checkpoint-tmp" in p.name}
  except FileNotFoundError:
    return set()


def _complete_steps(folder: Path) -> set[int]:
  try:
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()}
  except FileNotFoundError:
    return set()


class Timing:
  """Phase lengths measured on the uninterrupted run, and its steps per epoch (checkpoints are
  numbered by steps)."""

  def __init__(self, process: Process, results: dict[str, Any]):
    t_device = process.wait_line(lambda l: l.startswith("device: "), 0)
    t_compiled = process.wait_line(lambda l: l.startswith("compiled in"), 0)
    compiled = next(l for _, l in process.lines if l.startswith("compiled in"))
    self.steps = int(compiled.split("; ")[1].split()[0])  # "...; 489 steps of 32 per epoch"
    t_stopped = process.wait_line(lambda l: l.startswith("stopped after"), 0)
    t_written = process.wait_line(lambda l: l.startswith("results written"), 0)
    self.compile = t_compiled - t_device
    self.final = max(t_written - t_stopped, 0.005)
    self.epoch = results["timings"]["seconds_per_epoch"]


# -------------------------------------------------------------------------------- the kills

def _poll(process: Process, condition: Callable[[], bool], step: float = 0.001) -> bool:
  """Waits until ``condition()`` holds (True) or the process ends (False)."""
  deadline = time.monotonic() + TIMEOUT
  while process.alive() and time.monotonic() < deadline:
    if condition():
      return True
    time.sleep(step)
  return False


def kill_once(cmd: list[str], env: dict[str, str], workdir: Path, phase: str, rng: random.Random,
              timing: Timing, epochs: int) -> dict[str, Any]:
  """Starts ``cmd``, kills it in ``phase``; returns what happened."""
  ckpt, best = workdir / "checkpoints", workdir / "best"
  before = {"checkpoints": _tmp_folders(ckpt), "best": _tmp_folders(best)}
  process = Process(cmd, env)
  record: dict[str, Any] = {"phase": phase, "killed": False, "landed": None}
  delay = 0.0
  if phase == "compile":
    if process.wait_line(lambda l: l.startswith("device: ")) is not None:
      delay = rng.uniform(0.0, 0.8 * timing.compile)
      time.sleep(delay)
      record["landed"] = "compile" if not process.seen("compiled in") else "after compile"
  elif phase in ("checkpoint", "validation"):
    folder, key = (ckpt, "checkpoints") if phase == "checkpoint" else (best, "best")
    if _poll(process, lambda: bool(_tmp_folders(folder) - before[key])):
      delay = rng.uniform(0.0, 0.01)
      time.sleep(delay)
  elif phase == "final checkpoint":
    last = f"{epochs * timing.steps}.orbax-checkpoint-tmp"
    if (process.wait_line(lambda l: l.startswith(f"epoch {epochs:4d} ")) is not None
        and _poll(process, lambda: any(n.startswith(last) for n in _tmp_folders(ckpt)))):
      delay = rng.uniform(0.0, 0.01)
      time.sleep(delay)
  elif phase == "epoch":
    if process.wait_line(lambda l: l.startswith("epoch ")) is not None:
      first = next(int(l.split()[1]) for _, l in list(process.lines) if l.startswith("epoch "))
      # Its checkpoint written, the next epoch trains.
      step = first * timing.steps
      if _poll(process, lambda: step in _complete_steps(ckpt) and not any(
          n.startswith(f"{step}.") for n in _tmp_folders(ckpt))):
        delay = rng.uniform(0.0, 0.7 * timing.epoch)
        time.sleep(delay)
  elif phase == "mid-epoch":
    known = _complete_steps(ckpt)
    if _poll(process, lambda: bool(_inside(_complete_steps(ckpt) - known, timing.steps))):
      record["checkpoint"] = max(_inside(_complete_steps(ckpt) - known, timing.steps))
      delay = rng.uniform(0.0, 0.01)
      time.sleep(delay)
  elif phase == "final evaluation":
    if process.wait_line(lambda l: l.startswith("stopped after")) is not None:
      delay = rng.uniform(0.0, 0.25 * timing.final)
      time.sleep(delay)
  else:
    raise ValueError(f"unknown phase {phase!r}")
  record["delay_ms"] = round(1000 * delay, 1)
  record["killed"] = process.kill()
  process.finish()
  if phase in ("checkpoint", "validation", "final checkpoint") and record["killed"]:
    folder, key = (best, "best") if phase == "validation" else (ckpt, "checkpoints")
    left = _tmp_folders(folder) - before[key]
    record["landed"] = (f"{phase} write ({key}/{sorted(left)[0]} half-written)" if left
                        else f"just after the {phase} write")
  elif phase == "mid-epoch" and record["killed"] and "checkpoint" in record:
    newest = max(_complete_steps(ckpt))
    record["newest_inside"] = bool(_inside({newest}, timing.steps))
    record["landed"] = (f"mid-epoch (step {newest}, after the checkpoint there)"
                        if record["newest_inside"] else f"epoch (newest checkpoint {newest})")
  elif phase == "epoch" and record["killed"]:
    record["landed"] = "epoch" if not _tmp_folders(ckpt) - before["checkpoints"] else "checkpoint"
  elif phase == "final evaluation" and record["killed"]:
    record["landed"] = ("final evaluation" if not (workdir / "results.json").exists()
                        else "after results.json was written")
  record["resumed"] = "resumed from" in process.text()
  record["resumed_inside"] = _resumed_inside(process.text())
  record["output"] = process.text()
  return record


def _inside(steps: set[int], steps_per_epoch: int) -> set[int]:
  """The checkpoint steps of ``steps`` that lie inside an epoch."""
  return {s for s in steps if s % steps_per_epoch}


def _resumed_inside(text: str) -> bool:
  """Whether a run's output says it resumed from a checkpoint inside an epoch."""
  return any(l.startswith("resumed from ") and ", step " in l.split(": ", 1)[-1]
             for l in text.splitlines())


def plan(kills: int, rng: random.Random) -> list[str]:
  """The phase of each kill: the five mid-run phases in turns (each round shuffled), then
  about one in five kills at the end, last: the final checkpoint (when there are two or more
  final kills), then the final evaluation."""
  finals = max(1, round(kills / 5)) if kills else 0
  mids: list[str] = []
  while len(mids) < kills - finals:
    round_ = list(MID_PHASES)
    rng.shuffle(round_)
    mids += round_
  ends = (["final checkpoint"] if finals > 1 else []) + ["final evaluation"] * finals
  return mids[:kills - finals] + ends[:finals]


# ------------------------------------------------------------------------------- the checks

def restore_failures(workdir: Path) -> list[str]:
  """The checkpoint steps of ``checkpoints/`` and ``best/`` that do not restore."""
  import logging  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  logging.getLogger("absl").setLevel(logging.ERROR)
  failures = []
  for name, items in (("checkpoints", ("state", "meta")), ("best", ("params",))):
    folder = workdir / name
    if not folder.is_dir():
      failures.append(f"{name}/ missing")
      continue
    mngr = ocp.CheckpointManager(folder.resolve(), options=ocp.CheckpointManagerOptions(
        create=False, read_only=True))
    for step in mngr.all_steps():
      args = {k: ocp.args.JsonRestore() if k == "meta" else ocp.args.StandardRestore()
              for k in items}
      try:
        mngr.restore(step, args=ocp.args.Composite(**args))
      except Exception as err:  # pylint: disable=broad-except
        failures.append(f"{name}/{step}: {str(err).splitlines()[0][:120] if str(err) else err!r}")
    mngr.close()
  return failures


def temporary_leftovers(workdir: Path) -> list[str]:
  return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                if any(m in p.name for m in TMP_MARKERS))


def incomplete_outputs(workdir: Path, reference: Path) -> list[str]:
  """Outputs that are missing or do not read back completely."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  bad = []
  for name in OUTPUTS:
    path = workdir / name
    if not path.is_file():
      bad.append(f"{name} missing")
      continue
    try:
      if name.endswith(".json"):
        strict_json(path.read_text(encoding="utf-8"))
      elif name.endswith(".jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
          strict_json(line)
      elif name.endswith(".npy"):
        np.testing.assert_array_equal(np.load(path), np.load(reference / name))
      elif name.endswith(".npz"):
        with np.load(path) as f, np.load(reference / name) as g:
          if sorted(f.files) != sorted(g.files):
            bad.append(f"{name}: arrays {sorted(f.files)} != {sorted(g.files)}")
          for k in f.files:
            if f[k].dtype.kind == "f" and not np.all(np.isfinite(f[k])):
              bad.append(f"{name}: {k} not finite")
      elif path.stat().st_size == 0:
        bad.append(f"{name} empty")
    except Exception as err:  # pylint: disable=broad-except
      bad.append(f"{name}: {err}")
  return bad


def compare(workdir: Path, reference: Path) -> list[str]:
  """How the interrupted run's outcome differs from the uninterrupted one's (empty: identical)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  diffs = []
  try:
    got = strict_json((workdir / "results.json").read_text())
  except (OSError, ValueError) as err:
    return [f"results.json unreadable ({err})"]
  want = strict_json((reference / "results.json").read_text())
  for key in sorted(set(got["metrics"]) | set(want["metrics"])):
    if got["metrics"].get(key) != want["metrics"].get(key):
      diffs.append(f"metrics.{key}: {got['metrics'].get(key)!r} != {want['metrics'].get(key)!r}")
  curve = lambda r: [(c["epoch"], c["loss"], c["valid_mrr"]) for c in r["curve"]]  # noqa: E731
  if curve(got) != curve(want):
    diffs.append("validation curve differs")
  lines = lambda p: [(r["epoch"], r["loss"], r["valid_mrr"], r["valid_hits@10"])  # noqa: E731
                     for r in map(strict_json, (p / "metrics.jsonl").read_text().splitlines())]
  try:
    if lines(workdir) != lines(reference):
      diffs.append(f"metrics.jsonl differs: epochs {[r[0] for r in lines(workdir)]}")
  except (OSError, ValueError, KeyError) as err:
    diffs.append(f"metrics.jsonl unreadable ({err})")
  try:
    with np.load(workdir / "best_params.npz") as f, np.load(reference / "best_params.npz") as g:
      for k in g.files:
        if k not in f.files or not np.array_equal(f[k], g[k]):
          diffs.append(f"best_params.npz[{k}] differs")
  except Exception as err:  # pylint: disable=broad-except  # a truncated zip: BadZipFile
    diffs.append(f"best_params.npz unreadable ({err})")
  return diffs


# ---------------------------------------------------------------------------------- the run

def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kills", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--epochs", type=int, default=None,
                      help="epoch budget (default: 4 more than the kills aimed before the end)")
  parser.add_argument("--workdir", default=None, help="where the two runs go (default: a "
                      "temporary folder, removed at the end unless --keep)")
  parser.add_argument("--keep", action="store_true")
  parser.add_argument("-v", "--verbose", action="store_true", help="print every process's output")
  args = parser.parse_args(argv)
  rng = random.Random(args.seed)
  phases = plan(args.kills, rng)
  epochs = args.epochs or sum(p in MID_PHASES for p in phases) + 4
  base = Path(args.workdir or tempfile.mkdtemp(prefix="hale-faults-"))
  base.mkdir(parents=True, exist_ok=True)
  reference, workdir = base / "uninterrupted", base / "killed"
  for d in (reference, workdir):
    if d.exists():
      shutil.rmtree(d)
  env = launcher_env()
  t0 = time.monotonic()
  try:
    ref = Process(command(reference, epochs), env)
    if ref.finish() != 0:
      print(ref.text(), file=sys.stderr)
      print("error: the uninterrupted run failed", file=sys.stderr)
      return 2
    want = strict_json((reference / "results.json").read_text())
    timing = Timing(ref, want)
    print(f"uninterrupted: {epochs} epochs, test MRR {want['metrics']['test']['realistic']['mrr']:.4f}"
          f"; compile {timing.compile:.2f}s, epoch {timing.epoch * 1000:.0f} ms, final "
          f"evaluation {timing.final * 1000:.0f} ms ({time.monotonic() - t0:.0f}s)", flush=True)

    cmd = command(workdir, epochs)
    records = []
    for i, phase in enumerate(phases, start=1):
      if (workdir / "results.json").exists():
        print(f"kill {i}: the run already finished; no {phase} left to hit", flush=True)
        continue
      rec = kill_once(cmd, env, workdir, phase, rng, timing, epochs)
      records.append(rec)
      if args.verbose:
        print(rec["output"])
      steps = sorted(_complete_steps(workdir / "checkpoints"))
      print(f"kill {i}: aimed at {phase}, {rec['delay_ms']} ms after the trigger; "
            f"{'killed' if rec['killed'] else 'the process had ended'}"
            f"{', landed in ' + rec['landed'] if rec['landed'] else ''}; "
            f"{'started from scratch' if not rec['resumed'] else 'resumed from a checkpoint'}"
            f"{' inside an epoch' if rec['resumed_inside'] else ''}; "
            f"checkpoints now {steps}", flush=True)
    last = Process(cmd, env)
    rc = last.finish()
    if args.verbose:
      print(last.text())
    kills = sum(r["killed"] for r in records)
    # Every restart after a kill: the kill_once processes after the first, and the last one.
    restarts = records[1:] + [{"resumed": "resumed from" in last.text(),
                               "resumed_inside": _resumed_inside(last.text())}]
    resumes = sum(r["resumed"] for r in restarts[:kills])
    inside = sum(r["resumed_inside"] for r in restarts[:kills])
    # A kill after a checkpoint inside an epoch (the newest one) is followed by a resume there.
    missed = [i + 1 for i, (r, nxt) in enumerate(zip(records, restarts))
              if r.get("newest_inside") and not nxt["resumed_inside"]]
    if missed:
      print(f"kills {missed}: the restart did not continue from inside the epoch")
    if rc != 0:
      print(last.text(), file=sys.stderr)
      print(f"error: the last run exited with {rc}", file=sys.stderr)

    diffs = compare(workdir, reference)
    unreadable = restore_failures(workdir)
    incomplete = incomplete_outputs(workdir, reference)
    leftovers = temporary_leftovers(workdir)
    for title, items in (("differences", diffs), ("checkpoints that do not restore", unreadable),
                         ("missing or incomplete outputs", incomplete),
                         ("temporary files left", leftovers)):
      if items:
        print(f"{title}: " + "; ".join(items))
    landed = sorted({r["landed"].split(" (")[0] for r in records if r["killed"] and r["landed"]})
    print(f"landed in: {', '.join(landed)}; "
          f"{len(_complete_steps(workdir / 'checkpoints'))} checkpoint steps and "
          f"{len(_complete_steps(workdir / 'best'))} best step restore; "
          f"{len(leftovers)} temporary files left; {time.monotonic() - t0:.0f}s in all")
    lost = len(unreadable) + len(incomplete)
    print(f"{kills} kills, {resumes} resumes ({inside} inside an epoch), metrics "
          f"{'identical' if not diffs else 'DIFFERENT'}, {lost} files lost", flush=True)
    ok = rc == 0 and not diffs and not lost and not leftovers and not missed
    return 0 if ok else 1
  finally:
    if not args.keep and args.workdir is None:
      shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
  sys.exit(main())
