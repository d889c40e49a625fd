"""Command line: ``python -m hale_jax.plot --workdir=W [--workdir=W2 ...] --output=curve.png``.

Plots validation MRR against training seconds and against epochs for one or several runs,
from ``results.json`` of finished runs or ``metrics.jsonl`` of running ones, each labelled by
the settings in which the runs differ.  Needs matplotlib (``pip install hale_jax[plot]``).
``docs/plot-example.png`` is an example of its output (two WN18RR runs that differ in two
settings).
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
  """``(settings, curve)`` of a run folder: the settings are ``data`` (the dataset's name, or
  its data spec when names alike hide different files) and the flat config; the curve's points
  hold ``epoch``, ``train_seconds`` and ``valid_mrr``."""
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
  return {"data": run.get("dataset"), "data_spec": run.get("data"), **run["config"]}, curve


def labels(settings: list[dict[str, Any]], names: list[str]) -> list[str]:
  """A label per run: every setting in which the runs differ, the data first
  (``data=CoDEx-S dim=128``), or the folder name when there is one run or no difference."""
  def differs(key: str) -> bool:
    return len({json.dumps(s.get(key), sort_keys=True) for s in settings}) > 1
  keys = [k for k in dict.fromkeys(k for s in settings for k in s) if k != "data_spec"]
  shown = [k for k in keys if differs(k)]
  if differs("data_spec") and not differs("data"):  # same name, other files
    shown.insert(0, "data_spec")
  if not shown:
    return names
  return [" ".join(f"{'data' if k == 'data_spec' else k}={_short(s.get(k))}" for k in shown)
          for s in settings]


def _short(value: Any) -> str:
  """A data spec by its path or name; anything else as it prints."""
  if isinstance(value, dict):
    return str(value.get("path") or value.get("name") or value.get("train") or value)
  return str(value)


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
