"""The run folder tried as a hostile user would: each case does one careless or unlucky thing.

    python -m benchmarks.hostile [--workdir=DIR] [--only=NAME[,NAME...]] [--jobs=2] [-v]

The cases (``benchmarks/hostile_cases.py``) point ``--workdir`` at folders of other files,
cut files short, put NaN into parameters, fill the disk (``RLIMIT_FSIZE``), unset the dataset
folder, and so on, each through the command lines as a user types them.  Each ends in one
verdict:

- ``refused: one line, nothing changed``: exit status 2, one ``error:`` line naming the file or
  flag, no traceback, and every file that was there before is unchanged;
- ``recovered: said so, right answer``: exit status 0, a ``warning:`` line, and the same answer
  as before the damage;
- ``ok``: it simply works (a trained run loads offline, reads nothing outside its folder);

or ``FAILED: <what>``.  It prints one line per case and ``N cases, M as expected``; the exit
status is 0 only when every case ends with its expected verdict.  ``tests/test_hostile.py``
runs the same cases and checks the same verdicts.  About a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from benchmarks import faults

REFUSED = "refused: one line, nothing changed"
RECOVERED = "recovered: said so, right answer"
OK = "ok"
TIMEOUT = 300


class Failed(Exception):
  """A case did not end as it should; ``str(err)`` says what happened."""


def check(condition: bool, what: str) -> None:
  if not condition:
    raise Failed(what)


class Lab:
  """What the cases share: a scratch folder, a tiny dataset and one trained run of it."""

  def __init__(self, root: Path, cache: Path | None = None):
    self.root = root
    self.env = faults.launcher_env(cache)
    self.env.pop("HALE_DATA_DIR", None)
    self.env["HALE_CACHE_DIR"] = str(root / "no-cache")  # nothing may be downloaded
    self._base: Path | None = None

  def cli(self, module: str, *args: str, env: dict | None = None, fsize: int | None = None,
          timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Runs ``python -m hale_jax.<module> args``; ``fsize`` caps the size of any file it writes
    (bytes, ``ulimit -f``)."""
    env = dict(env or self.env)
    if fsize is not None:  # the compilation cache would meet the cap too
      env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def limit():
      resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([sys.executable, "-m", f"hale_jax.{module}", *args], cwd=self.root,
                          env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit if fsize is not None else None)

  def folder(self, name: str) -> Path:
    """A new empty folder for one case."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
    return path

  def dataset(self, folder: Path, labels: bool = True) -> Path:
    """The tiny generated graph (84 entities) as a dataset folder, with label files."""
    from hale_jax import synthetic  # pylint: disable=import-outside-toplevel
    faults.write_folder(synthetic.generate(seed=0, num_trees=2, branching=3, depth=3), folder)
    if labels:
      (folder / "entity_labels.tsv").write_text("t0\tRoot Zero\nt1\tRoot One\n")
      (folder / "relation_labels.tsv").write_text("parent_of\thas child\n")
    return folder

  def train_args(self, workdir: Path, *extra: str) -> list[str]:
    return [f"--workdir={workdir}", "--dim=8", "--batch_size=64", "--max_seconds=0",
            "--learning_rate=0.01", "--max_epochs=2", "--eval_every=1",
            "--checkpoint_every_epochs=1", *extra]

  def base(self) -> Path:
    """A finished run (2 epochs, a checkpoint each) of the tiny dataset, trained once."""
    if self._base is None:
      data = self.dataset(self.root / "tiny")
      run = self.root / "base-run"
      ok(self.cli("launch", f"--data_dir={data}", *self.train_args(run)))
      self._base = run
    return self._base

  def copy_of_base(self, name: str) -> Path:
    target = self.folder(name) / "run"
    shutil.copytree(self.base(), target)
    return target


def listing(folder: Path) -> dict[str, bytes]:
  """Every file under ``folder`` with its bytes (the lock file aside)."""
  if not folder.exists():
    return {}
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file() and p.name != ".lock"}


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
  check(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
  check("Traceback" not in proc.stderr, "a traceback")
  return proc


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
  """The single ``error:`` line of a refused command, which must contain every needle."""
  err = proc.stderr.strip()
  check(proc.returncode == 2, f"exit {proc.returncode} instead of 2: {err[-300:]}")
  check("Traceback" not in err, f"a traceback: {err[-300:]}")
  lines = err.splitlines()
  check(len(lines) == 1 and lines[0].startswith("error: "), f"not one error line: {err[-300:]}")
  for needle in needles:
    check(needle in lines[0], f"the line lacks {needle!r}: {lines[0]}")
  return lines[0]


def run_all(lab: Lab, cases: dict[str, tuple[str, Callable]], jobs: int,
            report: Callable[[str], None]) -> dict[str, str]:
  """Runs the cases (``jobs`` at a time); returns ``{name: verdict}``."""
  lab.base()

  def one(name: str) -> str:
    expected, fn = cases[name]
    t0 = time.perf_counter()
    try:
      verdict = fn(lab)
    except Failed as err:
      verdict = f"FAILED: {err}"
    except (OSError, subprocess.SubprocessError, ValueError) as err:
      verdict = f"FAILED: {type(err).__name__}: {err}"
    mark = "as expected" if verdict == expected else f"EXPECTED {expected}"
    report(f"{name:<34} {verdict}  [{mark}, {time.perf_counter() - t0:.1f}s]")
    return verdict

  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    verdicts = dict(zip(cases, pool.map(one, cases)))
  return verdicts


@contextlib.contextmanager
def _scratch(path: str | None):
  """The given folder (created, kept), or a temporary one removed at the end."""
  if path:
    Path(path).mkdir(parents=True, exist_ok=True)
    yield Path(path).resolve()
    return
  with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
    yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
  from benchmarks import hostile_cases  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", help="scratch folder (default: a temporary one, removed)")
  parser.add_argument("--only", default="", help="comma-separated case names")
  parser.add_argument("--jobs", type=int, default=2, help="cases run at a time")
  args = parser.parse_args(argv)
  cases = hostile_cases.CASES
  if args.only:
    unknown = set(args.only.split(",")) - set(cases)
    if unknown:
      parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(cases)}")
    cases = {k: v for k, v in cases.items() if k in args.only.split(",")}
  with _scratch(args.workdir) as root:
    verdicts = run_all(Lab(root), cases, args.jobs, lambda line: print(line, flush=True))
  good = sum(verdicts[name] == cases[name][0] for name in cases)
  print(f"{len(cases)} cases, {good} as expected")
  return 0 if good == len(cases) else 1


if __name__ == "__main__":
  # The cases import this module as benchmarks.hostile: run that one, not a second copy.
  from benchmarks.hostile import main as _main  # pylint: disable=import-self
  sys.exit(_main())
