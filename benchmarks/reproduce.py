"""Reproduces the paper's experiments (Tables 2, 3, 5 and Fig. 2), one training run per cell.

    python -m benchmarks.reproduce --experiment=table2
    python -m benchmarks.reproduce --experiment=table3 --models=RotL,RotE --budget_scale=0.5
    python -m benchmarks.reproduce --experiment=table5 --datasets=synthetic --max_epochs=2 \\
        --budget_scale=0.001 --dim_override=8 --outdir=/tmp/t5

Experiments (``benchmarks.paper_tables``; paper: Wang, Liu & Sheng, WWW '22):

- ``table2``: every model of ``hale_jax.models.PAPER_MODELS`` x {FB15k-237, WN18RR} x
  {SamNeg, HaLE}, 32d;
- ``table3``: the same models x {CoDEx-S, CoDEx-M, CoDEx-L} x {SamNeg, HaLE}, 256d;
- ``table5``: RotL-32 on {CoDEx-M, FB15k-237, WN18RR} x the ablations of Appendix A.3
  (HaLE, w/o Activation, w/o PosSquare, w/o RelRatio, HA + SamNeg, HA + AllNeg);
- ``fig2_losses``: RotE-32 on {WN18RR, FB15k-237, CoDEx-M} x every loss of the paper,
  ``hale_jax.objective.PAPER_LOSSES`` (SamNeg, AdvNeg, AllNeg, NonNeg, HaLE); the plain baselines
  score with the identity activation;
- ``fig2_activations``: RotE-32 HaLE on the same datasets x {Hanon, Halin, xe^x, 2x, 2Arctanh}.

``table2`` and ``table3`` also offer the opt-in variant ``hale-bias``
(``--variants=hale,samneg,hale-bias``): HaLE with a learned bias per tail entity
(``--bias=learn``), an extension beyond the paper whose rows are set against SamNeg, not HaLE.

SamNeg means ``--loss=samneg --activation=identity`` (KGEmb's negative sampling: 256 uniform
tail negatives per query, binary cross-entropy, learned entity biases ``b_h + b_t`` in the
score and margin 0, the defaults of ``--loss=samneg``); HaLE means ``--loss=hale
--activation=hanon``.

Settings come from the dataset's flagfile, read as the launcher reads it
(``hale_jax.options.parse_flagfile``; ``benchmarks.reproduce_cells``): the dataset of each
``launch/*.flags`` is its ``--dataset``, and every config field the file sets applies to each
cell of that dataset, baselines included (the paper grid-searched the baselines separately; we
do not), except the model, dimension and seed, which the cell sets, and the budget. The
variant's fields go on top. The training budget is the flagfile's ``--max_seconds`` (Table 1's
budgets) times ``--budget_scale``; the generated ``synthetic`` graph has no flagfile and gets
the config's default budget. Compilation and validation are not counted. Every strategy trains
in the same jit-compiled on-device epoch, so a time budget buys each as many epochs as its own
step cost allows. The paper's limited-time baselines ran in PyTorch on a GTX 1070, so their
epochs per budget (and the gap to HaLE) need not carry over.

Every cell trains in ``<outdir>/cells/<cell-id>`` through ``hale_jax.loop.train``.  A cell
whose ``results.json`` is there is not trained again (nor is its data loaded): rerunning the
same command only rebuilds the outputs.  An interrupted cell (SIGTERM, SIGINT) is checkpointed
and resumes on the next run.  A dataset that cannot be found or downloaded (``DataError``) is
reported as "not available" with the reason; the other datasets still run.

Outputs in ``--outdir`` (default ``benchmarks/out/<experiment>``), rewritten after every cell
(``benchmarks.reproduce_report``): ``results.csv`` and ``results.json`` (one row per cell),
``table.md`` (ours beside the paper's Tables 2/3/5 numbers and the difference, then HaLE's test
MRR set against every other variant's, ours and the paper's, with a count of where HaLE is
ahead) and, for ``fig2_*``, ``<experiment>.png`` (valid Hits@10 against training seconds, one
panel per dataset) when matplotlib is installed.  The tables list the current command's cells
and, with the status ``kept``, every other finished cell of the same experiment, dimension and
seed found in ``<outdir>/cells`` (the experiment's datasets and models and the command's), so
a narrower rerun (e.g. ``--models=TransE``) does not drop the rows an earlier, wider command
produced.  A kept cell whose stored config differs from what this command would train (other
settings or data) is left out; one with another budget is listed with a note.  Rows follow
the experiment's order (dataset, model, variant) whatever the command's order.  The Fig. 2
plots show the current command's cells only.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.paper_tables import EXPERIMENTS, all_variants
from benchmarks.reproduce_cells import (ROOT, Cell, canonical_dataset, canonical_models,
                                        data_spec, make_config, plan)
from benchmarks.reproduce_report import make_row, plot, write_outputs
from hale_jax import dataspec, models, rundir, runfiles
from hale_jax.config import Config

BUDGET_FIELDS = ("max_seconds", "max_epochs")


# ------------------------------------------------------------------ finished cells

def stored_results(workdir: Path, config: Config, spec: dict) -> tuple[dict | None, str | None]:
  """``(results, note)`` when ``workdir`` holds a finished run; ``(None, error)`` when it holds
  a different one; ``(None, None)`` when there is nothing finished to reuse."""
  path = workdir / runfiles.RESULTS
  if not path.exists():
    return None, None
  results = json.loads(path.read_text())
  want = config.flat()
  old = results.get("config", {})
  # The rule a resume follows (hale_jax.rundir.mismatch): the fields a resume may change
  # (how, not what, a run computes: lse_chunk, mesh, ..., and the budget) may differ.
  diffs = rundir.mismatch({"config": old}, {"config": want})
  stored = rundir.read_run(workdir)
  if stored and stored.get("data") and stored["data"] != spec:
    diffs.append(f"data ({stored['data']} vs {spec})")
  if diffs:
    return None, (f"{workdir} holds a different run ({'; '.join(diffs)}); delete it or use "
                  f"another --outdir")
  note = None
  if any(old.get(k) != want[k] for k in BUDGET_FIELDS):
    note = f"{trained_budget(old)}; delete the cell folder to retrain with the new budget"
  return results, note


def trained_budget(config: dict) -> str:
  """The budget a stored run's ``config`` trained with, in words."""
  return (f"trained with max_seconds={config.get('max_seconds')} max_epochs="
          f"{config.get('max_epochs')}")


def full_plan(experiment: str, cells: list[Cell]) -> list[Cell]:
  """Every cell of ``experiment`` at the dimension and seed of ``cells``, over the experiment's
  datasets and models plus any others ``cells`` name, in the experiment's order."""
  if not cells:
    return []
  spec = EXPERIMENTS[experiment]
  datasets_ = list(dict.fromkeys([*spec["datasets"], *(c.dataset for c in cells)]))
  models_ = list(dict.fromkeys([*spec["models"], *(c.model for c in cells)]))
  variants_ = [v.key for v in all_variants(experiment)]  # opt-in ones: kept if finished
  return plan(experiment, datasets_, models_, variants_, cells[0].dim, cells[0].seed)


def kept_rows(order: list[Cell], cells: list[Cell], outdir: Path, budget_scale: float,
              max_epochs: int, data_dir_override: str | None) -> list[dict]:
  """Rows (status ``kept``) of the finished cells in ``outdir/cells`` that ``order`` (the
  ``full_plan``) holds and ``cells`` leave out: those an earlier command trained.  Cells that
  hold a different run are skipped."""
  chosen = {c.cell_id for c in cells}
  rows = []
  for cell in order:
    workdir = outdir / "cells" / cell.cell_id
    if cell.cell_id in chosen or not (workdir / runfiles.RESULTS).is_file():
      continue
    config = make_config(cell, budget_scale, max_epochs)
    results, note = stored_results(workdir, config, data_spec(cell.dataset, data_dir_override))
    if results is not None:  # the budget column shows the stored budget; say it is another
      note = f"another budget: {trained_budget(results['config'])}" if note else ""
      rows.append(make_row(cell, config, results, "kept", note))
  return rows


def in_plan_order(rows: list[dict], order: list[Cell]) -> list[dict]:
  """``rows`` sorted by their cell's place in ``order`` (rows of other cells last, as given)."""
  index = {c.cell_id: i for i, c in enumerate(order)}
  return sorted(rows, key=lambda r: index.get(r["cell_id"], len(index)))


# ------------------------------------------------------------------ training

def _indent(prefix: str):
  def log(msg: str) -> None:
    for line in str(msg).splitlines():
      print(f"{prefix}{line}", flush=True)
  return log


def _load(loaded: dict[str, Any], dataset: str, spec: dict) -> Any:
  """The dataset's ``KGData``, or the reason it is not available; one dataset is kept in
  memory at a time (and the reasons of the failed ones)."""
  from hale_jax.data import DataError, one_line  # pylint: disable=import-outside-toplevel
  if dataset not in loaded:
    for other in [d for d, v in loaded.items() if not isinstance(v, str)]:
      del loaded[other]
    try:
      loaded[dataset] = dataspec.from_json(spec).load()
    except DataError as err:
      loaded[dataset] = one_line(err)
  return loaded[dataset]


def _train_cell(cell: Cell, config: Config, data, spec: dict, workdir: Path, argv: list[str],
                should_stop) -> tuple[dict | None, str | None]:
  """Trains one cell: ``(results, None)``, or ``(None, error)`` when the run refuses to start
  (a bad setting, a workdir in use or holding another run) or diverges.
  :class:`hale_jax.loop.Interrupted` passes through."""
  from hale_jax.data import one_line  # pylint: disable=import-outside-toplevel
  from hale_jax.loop import Diverged, train  # pylint: disable=import-outside-toplevel
  try:
    return train(config, data, workdir, log=_indent("    "), data_spec=spec,
                 should_stop=should_stop,
                 extra={"experiment": cell.experiment, "cell": cell.cell_id,
                        "variant": cell.variant.label, "argv": argv}), None
  except (ValueError, OSError, Diverged) as err:
    return None, one_line(err)


def _report(head: str, row: dict) -> None:
  paper = f" (paper {row['paper_mrr']:.3f})" if row["paper_mrr"] is not None else ""
  print(f"{head}: {row['status']}, {row['epochs']} epochs in {row['train_s']:.0f}s, test MRR "
        f"{row['test_mrr']:.4f}{paper} H@1 {row['test_hits@1']:.4f} H@10 "
        f"{row['test_hits@10']:.4f}", flush=True)


def run(experiment: str, cells: list[Cell], outdir: Path, budget_scale: float, max_epochs: int,
        data_dir_override: str | None, argv: list[str], should_stop=None) -> tuple[list, int]:
  """Trains (or reuses) every cell, rewriting the outputs after each; returns (rows, errors).

  The rows, and the outputs, include the ``kept`` rows of cells an earlier command finished
  (``kept_rows``), in the experiment's order.
  """
  from hale_jax.loop import Interrupted  # pylint: disable=import-outside-toplevel
  rows, curves, errors = [], [], 0
  order = full_plan(experiment, cells)
  kept = kept_rows(order, cells, outdir, budget_scale, max_epochs, data_dir_override)

  def write() -> None:
    write_outputs(outdir, experiment, in_plan_order(rows + kept, order), budget_scale, argv)

  loaded: dict[str, Any] = {}
  for i, cell in enumerate(cells, 1):
    head = (f"[{i}/{len(cells)}] {experiment} {cell.dataset} {cell.model}-{cell.dim} "
            f"{cell.variant.label}")
    config = make_config(cell, budget_scale, max_epochs)
    spec = data_spec(cell.dataset, data_dir_override)
    workdir = outdir / "cells" / cell.cell_id
    results, note = stored_results(workdir, config, spec)
    status, error = "cached", None
    if results is None and note is not None:  # a different run is in the way
      error = note
    elif results is None:
      data = _load(loaded, cell.dataset, spec)
      if isinstance(data, str):
        rows.append(make_row(cell, config, None, "not available", data))
        print(f"{head}: not available: {data}", flush=True)
      else:
        print(f"{head}: training in {workdir} (budget {config.budget.max_seconds:g}s"
              f"{f', max {max_epochs} epochs' if max_epochs else ''})", flush=True)
        try:
          results, error = _train_cell(cell, config, data, spec, workdir, argv, should_stop)
        except Interrupted:
          write()
          raise
        status = "trained"
    if error is not None:
      rows.append(make_row(cell, config, None, "error", error))
      errors += 1
      print(f"{head}: error: {error}", flush=True)
    if results is not None:
      rows.append(make_row(cell, config, results, status, note or ""))
      curves.append((cell, results.get("curve", [])))
      _report(head, rows[-1])
    write()
  if not cells:
    write()
  if experiment.startswith("fig2"):
    path = plot(outdir, experiment, curves)
    if path:
      print(f"plot written to {path}", flush=True)
  return in_plan_order(rows + kept, order), errors


# ------------------------------------------------------------------ command line

def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("experiment", None, list(EXPERIMENTS), "Which paper experiment to run.")
  flags.DEFINE_list("datasets", None, "Datasets (default per experiment); 'synthetic' is the "
                    "generated graph.")
  flags.DEFINE_list("models", None, f"Models (default per experiment) from "
                    f"{', '.join(models.MODEL_NAMES)}.")
  flags.DEFINE_list("variants", None, "The experiment's variant keys to run (default: the "
                    "paper's variants; table2 and table3 also offer the opt-in 'hale-bias', HaLE "
                    "with learned tail biases, an extension set against SamNeg).")
  flags.DEFINE_float("budget_scale", 1.0, "Multiplies the flagfiles' training budgets.")
  flags.DEFINE_string("outdir", None, "Output folder; default benchmarks/out/<experiment>.")
  flags.DEFINE_string("data_dir_override", None, "Read every dataset from this folder instead "
                      "(<dir>/<Name> if it holds train.txt, else <dir> itself).")
  flags.DEFINE_integer("max_epochs", 0, "Epoch cap per cell as well as the budget (0: none).")
  flags.DEFINE_integer("dim_override", None, "Embedding dimension instead of the experiment's.")
  flags.DEFINE_integer("seed", 0, "Random seed of every cell.")
  flags.mark_flag_as_required("experiment")
  return flags.FLAGS


def _cells(FLAGS) -> tuple[list[str], list[str], list[Cell]]:  # pylint: disable=invalid-name
  """The command's datasets, models and cells; raises ``app.UsageError`` on bad names."""
  from absl import app  # pylint: disable=import-outside-toplevel
  from hale_jax.data import DataError  # pylint: disable=import-outside-toplevel
  exp = FLAGS.experiment
  try:
    names = FLAGS.datasets or EXPERIMENTS[exp]["datasets"]
    dsets = list(dict.fromkeys(canonical_dataset(d) for d in names if d.strip()))
    models_ = canonical_models(FLAGS.models or EXPERIMENTS[exp]["models"])
    cells = plan(exp, dsets, models_, FLAGS.variants, FLAGS.dim_override, FLAGS.seed)
  except (DataError, ValueError) as err:
    raise app.UsageError(str(err))
  return dsets, models_, cells


def main(argv, FLAGS) -> None:  # pylint: disable=invalid-name
  from absl import app, logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)  # keep jax's and orbax's INFO lines out of the output
  from hale_jax.loop import Interrupted  # pylint: disable=import-outside-toplevel
  from hale_jax.stopping import StopRequest  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  exp = FLAGS.experiment
  if FLAGS.budget_scale < 0 or (FLAGS.budget_scale == 0 and not FLAGS.max_epochs):
    raise app.UsageError("--budget_scale must be > 0 (or 0 with --max_epochs)")
  dsets, models_, cells = _cells(FLAGS)
  outdir = Path(FLAGS.outdir) if FLAGS.outdir else ROOT / "benchmarks" / "out" / exp
  print(f"{exp}: {len(cells)} cells ({', '.join(dsets)} x {', '.join(models_)} x "
        f"{len({c.variant.key for c in cells})} variants) into {outdir}", flush=True)
  t0 = time.perf_counter()
  stop = StopRequest("checkpointing the current cell after its running segment")
  try:
    rows, errors = run(exp, cells, outdir, FLAGS.budget_scale, FLAGS.max_epochs,
                       FLAGS.data_dir_override, list(sys.argv), should_stop=stop)
  except Interrupted as err:
    print(f"stopped: {err}; partial outputs in {outdir}", file=sys.stderr)
    sys.exit(stop.exit_code())
  print()
  print((outdir / "table.md").read_text(), end="")
  counts = collections.Counter(r["status"] for r in rows)
  print(f"\n{', '.join(f'{v} {k}' for k, v in counts.items())} in "
        f"{time.perf_counter() - t0:.0f}s; outputs in {outdir}")
  if errors:
    sys.exit(1)


if __name__ == "__main__":
  from absl import app as _app
  _FLAGS = _define_flags()
  _app.run(lambda argv: main(argv, _FLAGS))
