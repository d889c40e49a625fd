"""Command line: ``python -m hale_jax.plot --workdir=W [--workdir=W2 ...] --output=curve.png``.

Plots validation MRR against training seconds and against epochs for one or several runs,
from ``results.json`` of finished runs or ``metrics.jsonl`` of running ones, each labelled by
the settings in which the runs differ.  Needs matplotlib (``pip install hale_jax[plot]``).
``docs/plot-example.png`` is its output for two WN18RR RotL-32 runs of 600 s on a 2-core CPU
(2026-12-01, commit f994cb2): ``launch/wn18rr.flags`` and the same with ``--nopos_square
--lr_schedule=cosine``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from absl import flags

from hale_jax import cli, rundir, runfiles, tracking

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_multi_string("workdir", [], "A run folder; repeat for several runs (more may "
                            "follow as plain arguments).")
  flags.DEFINE_string("output", "curve.png", "The PNG to write.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")


def read_curve(workdir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """``(flat config, curve)`` of a run folder; the curve's points hold ``epoch``,
  ``train_seconds`` and ``valid_mrr``."""
  workdir = Path(workdir)
  run = rundir.read_run(workdir)
  if run is None:
    raise FileNotFoundError(f"{workdir}: no run.json; pass the --workdir of a hale_jax run")
  results, metrics = workdir / runfiles.RESULTS, workdir / runfiles.METRICS
  finished = rundir.read_results(workdir, set_aside=False) if results.is_file() else None
  if finished is not None:
    curve = finished.get("curve", [])
  elif metrics.is_file():
    curve = tracking.read_metrics(metrics, lambda line: print(line, file=sys.stderr))
  else:
    raise FileNotFoundError(f"{workdir}: no results.json or metrics.jsonl yet; the run has "
                            f"not validated")
  return run["config"], curve


def labels(configs: list[dict[str, Any]], names: list[str]) -> list[str]:
  """A label per run: the settings in which the runs differ (``lam=0.3 batch_size=512``), or
  the folder name when there is one run or no difference."""
  keys = sorted({k for c in configs for k in c} - {"max_seconds", "max_epochs"})
  differing = [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]
  if not differing:
    return names
  return [" ".join(f"{k}={c.get(k)}" for k in differing) for c in configs]


def plot(workdirs: list[str], output: str | Path) -> Path:
  """Writes the two-panel PNG of the runs' validation curves; returns its path."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel  # an optional extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError("plotting needs matplotlib: pip install matplotlib (or hale_jax[plot])"
                     ) from None
  runs = [read_curve(w) for w in workdirs]
  names = labels([c for c, _ in runs], [Path(w).name for w in workdirs])
  fig, (by_time, by_epoch) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  for (_, curve), name in zip(runs, names):
    by_time.plot([p["train_seconds"] for p in curve], [p["valid_mrr"] for p in curve],
                 marker=".", label=name)
    by_epoch.plot([p["epoch"] for p in curve], [p["valid_mrr"] for p in curve], marker=".")
  by_time.set(xlabel="training seconds", ylabel="valid MRR (filtered, realistic ties)")
  by_epoch.set(xlabel="epochs")
  by_time.legend(fontsize=8)
  for ax in (by_time, by_epoch):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  with runfiles.atomic_write(output) as f:
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)
  return Path(output)


@cli.user_errors
def main(argv):
  workdirs = list(FLAGS.workdir) + list(argv[1:])
  if not workdirs:
    raise ValueError("give at least one --workdir")
  cli.check_output(FLAGS.output, FLAGS.overwrite)
  print(f"wrote {plot(workdirs, FLAGS.output)}")


def run():
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run()
