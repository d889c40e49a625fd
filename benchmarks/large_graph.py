"""Large graphs on one machine: a TSV file to the first step, a time budget, signals, evaluation
and prediction, each measured on the command line a user would type.

    python -m benchmarks.large_graph                          # 1m and 2.5m, every phase
    python -m benchmarks.large_graph --sizes=1m --phases=first_step,budget
    python -m benchmarks.large_graph --sizes=tiny             # a dry run in a few minutes

Sizes (``SIZES``): ``1m`` (1,000,000 entities, 5,000,000 train triples), ``2.5m``
(2,500,000 entities, 17,000,000 train triples: the size of ogbl-wikikg2), ``1m-lite``
(1,000,000 / 500,000), ``tiny`` (20,000 / 100,000). Each graph is
``hale_jax.synthetic.power_law`` (500 relations, 1,000 valid and 1,000 test triples) written
once as ``train.txt``/``valid.txt``/``test.txt`` with Wikidata-like names (``Q<id>``,
``P<id>``) under ``--root``. The phases, each a fresh process of the launcher,
``predict`` or ``evaluate`` (``python -m hale_jax.<command>``, RotL-32, defaults otherwise):

- ``first_step``: ``launch --data_dir`` killed as soon as it prints ``compiled in``, the line
  after which the first step runs: seconds from the start, and the process's peak resident
  memory (``os.wait4``'s ``ru_maxrss``, the figure ``/usr/bin/time -v`` reports);
- ``budget``: ``launch --max_seconds=60`` to its end: wall seconds (reading, compiling,
  validation and test included), the longest gap between printed lines after compiling,
  seconds per segment and triples/s (its progress lines), whether it left a checkpoint, the
  peak memory, and evaluation seconds per 1,000 queries (``results.json``: ``eval_seconds``
  over the valid and test queries ranked);
- ``signals``: a run without a time budget gets SIGTERM inside its first epoch (seconds to
  exit, and whether a checkpoint inside the epoch was written), is rerun and killed with
  SIGKILL once it has resumed and trained a segment, and rerun again: it must resume inside
  the epoch again; the last run is stopped with SIGTERM;
- ``predict``: ``predict --queries`` of 100,000 queries (half ``h r ?``, half ``? r t``, heads
  and relations of random train triples) on the ``budget`` phase's run folder, k = 10: wall
  seconds and peak memory;
- ``resume_equal`` (meant for ``1m-lite``, whose 1M-entity epoch takes minutes on a GPU and
  about 13 minutes on a 2-core CPU): one epoch uninterrupted, and the same epoch stopped by SIGTERM inside it,
  rerun and killed with SIGKILL after resuming, and rerun to its end; whether the two runs'
  valid and test metrics are equal.

One JSON line per phase and size on stdout and in ``--output``; a markdown table at the end.
Measure on an idle machine: the figures are wall-clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags

from benchmarks import faults
from hale_jax import synthetic

SIZES = {"tiny": (20_000, 100_000), "1m": (1_000_000, 5_000_000),
         "2.5m": (2_500_000, 17_000_000), "1m-lite": (1_000_000, 500_000)}
PHASES = ("first_step", "budget", "signals", "predict", "resume_equal")
RELATIONS, HELD_OUT = 500, 1000
TRAIN_ARGS = ("--model=RotL", "--dim=32", "--eval_every=1")


def write_graph(folder: Path, entities: int, triples: int, seed: int = 0) -> dict[str, Any]:
  """Writes the power-law graph's three TSV splits into ``folder`` unless they are there."""
  done = folder / "test.txt"
  if done.exists():
    return {"generate_s": None, "file_mb": round(_mb(folder), 1)}
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
  from pyarrow import csv  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  data = synthetic.power_law(entities, triples / entities, RELATIONS, held_out=HELD_OUT,
                             seed=seed)
  folder.mkdir(parents=True, exist_ok=True)

  def names(prefix: str, ids: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(ids), pa.string()), "")

  for split in ("train", "valid", "test"):  # test last: its presence marks a complete graph
    t = getattr(data, split)
    table = pa.table({"h": names("Q", t[:, 0]), "r": names("P", t[:, 1]),
                      "t": names("Q", t[:, 2])})
    options = csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    csv.write_csv(table, folder / f".{split}.txt.partial", options)
    os.replace(folder / f".{split}.txt.partial", folder / f"{split}.txt")
  return {"generate_s": round(time.perf_counter() - t0, 1), "file_mb": round(_mb(folder), 1)}


def _mb(folder: Path) -> float:
  return sum(p.stat().st_size for p in folder.glob("*.txt")) / 2**20


class Command:
  """A ``python -m hale_jax.<module>`` process whose output lines are timestamped as they come."""

  def __init__(self, module: str, *args: str, log: Path | None = None):
    self.t0 = time.monotonic()
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", f"hale_jax.{module}", *args], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=faults.launcher_env(), bufsize=1)
    self.lines: list[tuple[float, str]] = []
    self._log = open(log, "w", encoding="utf-8") if log else None  # pylint: disable=consider-using-with
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()
    self.rusage = None

  def _read(self) -> None:
    for line in self.proc.stdout:
      self.lines.append((time.monotonic() - self.t0, line.rstrip("\n")))
      if self._log:
        self._log.write(f"{self.lines[-1][0]:8.1f}  {line}")
        self._log.flush()

  def wait_for(self, text: str, timeout: float, after: float = 0.0) -> float | None:
    """Seconds since the start at which a line containing ``text`` (printed after ``after``)
    appeared; None when the process ended or ``timeout`` passed first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
      for t, line in list(self.lines):
        if t >= after and text in line:
          return t
      if self.exited() and not self._reader.is_alive():
        return None
      time.sleep(0.05)
    return None

  def exited(self) -> bool:
    """Whether the process ended (without reaping it: :meth:`finish` reads its rusage)."""
    return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

  def finish(self, sig: int | None = None, timeout: float = 3600) -> float:
    """Sends ``sig`` (if any), waits for the exit; the seconds it took after the signal."""
    t0 = time.monotonic()
    if sig is not None and not self.exited():
      os.kill(self.proc.pid, sig)  # not Popen.send_signal: its poll() would reap the process
    deadline = time.monotonic() + timeout
    while True:
      pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
      if pid:
        break
      if time.monotonic() > deadline:
        self.proc.kill()
        _, status, rusage = os.wait4(self.proc.pid, 0)
        break
      time.sleep(0.05)
    self.proc.returncode = os.waitstatus_to_exitcode(status)
    self.rusage = rusage
    self._reader.join(10)
    if self._log:
      self._log.close()
    return time.monotonic() - t0

  @property
  def peak_gb(self) -> float:
    return round(self.rusage.ru_maxrss * 1024 / 1e9, 2)  # Linux: kilobytes

  def text(self) -> str:
    return "\n".join(line for _, line in self.lines)


def _launch(data: Path, run: Path, log: Path, *extra: str) -> Command:
  return Command("launch", f"--data_dir={data}", f"--workdir={run}", *TRAIN_ARGS, *extra,
                 log=log)


def first_step(data: Path, work: Path) -> dict[str, Any]:
  """Seconds and peak memory from the launcher's start to its first training step."""
  run = work / "first_step"
  cmd = _launch(data, run, work / "first_step.log", "--max_seconds=60", "--overwrite")
  at = cmd.wait_for("compiled in", timeout=1800)
  cmd.finish(signal.SIGKILL)
  return {"first_step_s": None if at is None else round(at, 1), "first_step_peak_gb":
          cmd.peak_gb, "read_line": _line(cmd, "triples")}


def _line(cmd: Command, text: str) -> str | None:
  return next((line.strip() for _, line in cmd.lines if text in line), None)


def _time_of(cmd: Command, text: str) -> float | None:
  """Seconds since the start of the first line holding ``text`` (the process has ended)."""
  return next((t for t, line in cmd.lines if text in line), None)


def _gaps(cmd: Command, start: float) -> list[float]:
  times = [t for t, _ in cmd.lines if t >= start]
  return [b - a for a, b in zip(times, times[1:])]


def budget(data: Path, work: Path) -> dict[str, Any]:
  """``--max_seconds=60`` end to end: wall time, line gaps, segments, evaluation, memory."""
  run = work / "budget"
  cmd = _launch(data, run, work / "budget.log", "--max_seconds=60", "--overwrite")
  compiled = cmd.wait_for("compiled in", timeout=1800) or 0.0
  cmd.finish(timeout=3600)
  trained = [t for t, line in cmd.lines if line.lstrip().startswith("training epoch")]
  stopped = _time_of(cmd, "stopped after") or cmd.lines[-1][0]
  gaps = _gaps(cmd, compiled)
  out = {"budget_wall_s": round(cmd.lines[-1][0], 1), "budget_exit": cmd.proc.returncode,
         "budget_peak_gb": cmd.peak_gb,
         "max_gap_after_compile_s": round(max(gaps[:-1] or [0]), 1),
         "max_gap_while_training_s": round(max(gaps[:len(trained) + 1] or [0]), 1),
         "progress_lines": len(trained),
         "checkpoints": sorted(p.name for p in (run / "checkpoints").glob("[0-9]*")),
         "compiled_at_s": round(compiled, 1), "stopped_at_s": round(stopped, 1)}
  results = run / "results.json"
  if results.exists():
    res = json.loads(results.read_text())
    d, t = res["dataset"], res["timings"]
    ranked = 2 * d["valid"] * (len(res["curve"]) + 1) + 2 * d["test"]
    steps = res["metrics"]["steps"]
    out.update(train_s=round(t["train_seconds"], 1), steps=steps,
               step_ms=round(1000 * t["train_seconds"] / max(steps, 1), 1),
               triples_per_s=round(steps * res["config"]["batch_size"] / t["train_seconds"]),
               eval_per_1k_queries_s=round(1000 * t["eval_seconds"] / ranked, 2),
               compile_s=round(t["compile_seconds"], 1))
  return out


def signals(data: Path, work: Path) -> dict[str, Any]:
  """SIGTERM inside an epoch, a rerun killed with SIGKILL after resuming, a second rerun."""
  run, logs = work / "signals", work
  first = _launch(data, run, logs / "signals-1.log", "--max_epochs=1", "--max_seconds=0",
                  "--overwrite")
  seen = first.wait_for("training epoch 1:", timeout=1800)
  sigterm_s = first.finish(signal.SIGTERM, timeout=300)
  out = {"trained_before_sigterm": seen is not None, "sigterm_exit_s": round(sigterm_s, 1),
         "sigterm_exit": first.proc.returncode,
         "sigterm_line": _line(first, "checkpoint")}
  second = _launch(data, run, logs / "signals-2.log", "--max_epochs=1", "--max_seconds=0")
  resumed = second.wait_for("resumed from", timeout=1800)
  out["resumed_1"] = _line(second, "resumed from")
  if resumed is not None:
    second.wait_for("training epoch 1:", timeout=600, after=resumed)
  second.finish(signal.SIGKILL)
  third = _launch(data, run, logs / "signals-3.log", "--max_epochs=1", "--max_seconds=0")
  third.wait_for("resumed from", timeout=1800)
  out["resumed_2"] = _line(third, "resumed from")
  third.finish(signal.SIGTERM, timeout=300)
  # "resumed from ...: epoch 0, step 1,234 of 9,765 of epoch 1, ..." inside an epoch
  out["resumed_inside_epoch"] = all(", step " in (out[k] or "") and " of epoch " in out[k]
                                    for k in ("resumed_1", "resumed_2"))
  return out


def resume_equal(data: Path, work: Path) -> dict[str, Any]:
  """One epoch uninterrupted, and the same epoch stopped by SIGTERM inside it, rerun and killed
  with SIGKILL after resuming, and rerun to its end: the two ``results.json`` must agree."""
  args = ("--max_epochs=1", "--max_seconds=0")
  whole = _launch(data, work / "equal-whole", work / "equal-whole.log", *args, "--overwrite")
  whole.finish(timeout=3600)
  run = work / "equal-cut"
  cut = _launch(data, run, work / "equal-cut-1.log", *args, "--overwrite")
  cut.wait_for("training epoch 1:", timeout=1800)
  cut.finish(signal.SIGTERM, timeout=300)
  again = _launch(data, run, work / "equal-cut-2.log", *args)
  resumed = again.wait_for("resumed from", timeout=1800)
  if resumed is not None:
    again.wait_for("training epoch 1:", timeout=600, after=resumed)
  again.finish(signal.SIGKILL)
  last = _launch(data, run, work / "equal-cut-3.log", *args)
  last.finish(timeout=3600)
  out = {"equal_resumed_at": _line(last, "resumed from"), "equal_exit": last.proc.returncode}
  try:
    a, b = (json.loads((w / "results.json").read_text())["metrics"]
            for w in (work / "equal-whole", run))
    out["equal_metrics"] = a["valid"] == b["valid"] and a["test"] == b["test"]
    out["equal_test_mrr"] = a["test"]["realistic"]["mrr"]
  except (OSError, KeyError, ValueError) as err:
    out["equal_metrics"] = f"not compared: {err}"
  return out


def write_queries(data: Path, path: Path, count: int, seed: int = 0) -> None:
  """``count`` queries from random train lines: half ``h r ?``, half ``? r t``."""
  lines = (data / "train.txt").read_text(encoding="utf-8").splitlines()
  rng = np.random.default_rng(seed)
  with open(path, "w", encoding="utf-8") as f:
    for i in rng.integers(0, len(lines), count).tolist():
      h, r, t = lines[i].split("\t")
      f.write(f"{h}\t{r}\t?\n" if rng.random() < 0.5 else f"?\t{r}\t{t}\n")


def predict(data: Path, work: Path, count: int = 100_000) -> dict[str, Any]:
  """``predict --queries`` of ``count`` queries on the budget phase's run folder."""
  run, queries = work / "budget", work / f"queries-{count}.tsv"
  if not (run / "results.json").exists():
    return {"predict_skipped": "the budget phase left no finished run"}
  if not queries.exists():
    write_queries(data, queries, count)
  cmd = Command("predict", f"--workdir={run}", f"--queries={queries}", "--k=10",
                f"--output={work / 'answers.tsv'}", "--overwrite", log=work / "predict.log")
  cmd.finish(timeout=3600)
  answers = sum(1 for _ in open(work / "answers.tsv", encoding="utf-8")) if (
      work / "answers.tsv").exists() else 0
  return {"predict_queries": count, "predict_s": round(cmd.lines[-1][0] if cmd.lines else 0, 1),
          "predict_exit": cmd.proc.returncode, "predict_peak_gb": cmd.peak_gb,
          "answer_lines": answers}


def run_size(name: str, root: Path, phases: list[str]) -> dict[str, Any]:
  entities, triples = SIZES[name]
  data, work = root / name / "data", root / name
  row = {"size": name, "entities": entities, "train_triples": triples,
         **write_graph(data, entities, triples)}
  for phase in phases:
    if phase in ("signals", "predict") and name == "2.5m":
      continue  # the issue asks for these at 1M entities
    t0 = time.perf_counter()
    row.update(globals()[phase](data, work))
    print(f"{name} {phase} done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
  return row


def markdown(rows: list[dict[str, Any]]) -> str:
  keys = ["size", "first_step_s", "first_step_peak_gb", "budget_wall_s", "budget_peak_gb",
          "max_gap_while_training_s", "step_ms", "eval_per_1k_queries_s", "sigterm_exit_s",
          "resumed_inside_epoch", "predict_s", "predict_peak_gb"]
  out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  out += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
  return "\n".join(out)


def _define_flags() -> None:
  flags.DEFINE_list("sizes", ["1m", "2.5m"], f"Graphs: {', '.join(SIZES)}.")
  flags.DEFINE_list("phases", list(PHASES), f"Phases: {', '.join(PHASES)}.")
  flags.DEFINE_string("root", "benchmarks/out/large", "Graphs, run folders and logs.")
  flags.DEFINE_string("output", None, "Also append the JSON lines here.")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  unknown = sorted(set(f.sizes) - set(SIZES)) + sorted(set(f.phases) - set(PHASES))
  if unknown:
    raise app.UsageError(f"unknown size or phase: {', '.join(unknown)}")
  rows = []
  for name in f.sizes:
    rows.append(run_size(name, Path(f.root), f.phases))
    line = json.dumps(rows[-1])
    print(line, flush=True)
    if f.output:
      with open(f.output, "a", encoding="utf-8") as out:
        out.write(line + "\n")
  print(markdown(rows))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
