"""Command line: resumable hyperparameter studies with Optuna.

    python -m hale_jax.sweep --study_dir=S --flagfile=launch/codex_s.flags --space=space.json \\
        --trials=20 [--max_seconds_per_trial=60] [--pruner=median|halving|none]
        [--prune_from_epoch=1] [--report]

The study lives in ``S/study.db`` (SQLite), so a killed sweep resumes where it was and several
workers started with the same command share it.  Each trial is an ordinary run folder
``S/trial_NNNN`` (its log in ``log.txt``) trained from the flagfile's settings with the trial's
values; it reports its valid MRR at each validation, so the pruner stops bad trials early.
The objective is the best valid MRR (realistic ties); the test split plays no part in the
search.  A new study's first trial is the flagfile itself (its values of the searched
parameters, where they lie inside the space; ``--nobaseline_trial`` turns this off), so the
report shows the setting the search has to beat.  A trial left running by a killed worker (its
run folder no longer locked) is marked failed and its values are tried again.  At the end, or
with ``--report`` alone: a table of the trials, ``S/best.flags`` (the flagfile plus the best
values) and ``S/study.png``.

The space file is a JSON object mapping config fields (the launcher's flag names) to
distributions::

    {"lam":           {"type": "float", "low": 0.1, "high": 2.0, "log": true},
     "batch_size":    {"type": "categorical", "choices": [512, 1024, 2048]},
     "num_negatives": {"type": "int", "low": 64, "high": 512, "step": 64}}

Optuna and matplotlib are optional extras (``pip install hale_jax[sweep]``).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import sys
from pathlib import Path
from typing import Any

from absl import flags

from hale_jax import config as config_lib
from hale_jax import cli, loop, options, runfiles
from hale_jax.callbacks import Callback, Validation
from hale_jax.config import Config

FLAGS = flags.FLAGS
STUDY_NAME = "hale_jax"
STALE_AFTER_SECONDS = 10  # a live trial locks its run folder within a second of starting
_TYPES = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}


def parse_space(path: str | Path) -> dict[str, dict[str, Any]]:
  """The search space of a JSON file (module docstring); raises ValueError with one line."""
  try:
    space = json.loads(Path(path).read_text(encoding="utf-8"))
  except (OSError, ValueError) as err:
    raise ValueError(f"--space {path}: cannot be read as JSON ({err})") from None
  if not isinstance(space, dict) or not space:
    raise ValueError(f"--space {path}: expected a JSON object of parameter -> distribution")
  known = config_lib.field_owners()
  for name, spec in space.items():
    if name not in known:
      raise ValueError(f"--space {path}: unknown parameter {name!r}; parameters are config "
                       f"fields such as lam, alpha, gamma, learning_rate, batch_size")
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in _TYPES or any(k not in spec for k in _TYPES[kind]):
      raise ValueError(f"--space {path}: parameter {name!r} needs type float or int with low "
                       f"and high, or type categorical with choices; got {spec!r}")
  return space


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """The trial's values for every parameter of ``space``."""
  values = {}
  for name, spec in space.items():
    if spec["type"] == "float":
      values[name] = trial.suggest_float(name, spec["low"], spec["high"],
                                         log=bool(spec.get("log", False)))
    elif spec["type"] == "int":
      values[name] = trial.suggest_int(name, spec["low"], spec["high"],
                                       step=int(spec.get("step", 1)),
                                       log=bool(spec.get("log", False)))
    else:
      values[name] = trial.suggest_categorical(name, spec["choices"])
  return values


class _Reporter(Callback):
  """Reports each validation to the trial and stops the run when the pruner says so."""

  def __init__(self, trial: Any):
    self._trial = trial
    self.pruned = False

  def on_validation(self, v: Validation) -> str | None:
    print(f"  trial {self._trial.number}: epoch {v.epoch}, valid MRR "
          f"{v.metrics['realistic']['mrr']:.4f} after {v.train_seconds:.1f}s of training",
          flush=True)
    self._trial.report(v.metrics["realistic"]["mrr"], step=v.epoch)
    if self._trial.should_prune():
      self.pruned = True
      return "pruned by the sweep"
    return None


def _optuna():
  try:
    import optuna  # pylint: disable=import-outside-toplevel  # an optional extra
  except ImportError:
    raise ValueError("sweeps need optuna: pip install optuna (or hale_jax[sweep])") from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  return optuna


def open_study(study_dir: Path, pruner: str = "median", from_epoch: int = 1):
  """The study of ``study_dir`` (created on first use) with the named pruner; the median
  pruner judges a trial from its validation at epoch ``from_epoch`` on (a graph whose valid
  MRR sits near 0 for its first epochs, as WN18RR's does, needs a later one)."""
  optuna = _optuna()
  pruners = {"median": optuna.pruners.MedianPruner(n_startup_trials=2,
                                                   n_warmup_steps=from_epoch),
             "halving": optuna.pruners.SuccessiveHalvingPruner(),
             "none": optuna.pruners.NopPruner()}
  study_dir.mkdir(parents=True, exist_ok=True)
  db = study_dir.resolve() / "study.db"
  try:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize",
                               pruner=pruners[pruner], load_if_exists=True)
  except Exception as err:  # pylint: disable=broad-except  # sqlalchemy's errors are many
    raise ValueError(f"{db}: cannot be opened as a study ({str(err).splitlines()[0][:160]}); "
                     f"it may be damaged: move it away to start the study afresh") from None


def _trial_dir(study_dir: Path, number: int) -> Path:
  return study_dir / f"trial_{number:04d}"


def baseline_values(base: Config, space: dict[str, dict[str, Any]]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
  """The flagfile's own values of the space's parameters, split into those inside the space
  and those outside it (a number outside ``[low, high]``, a value not among the choices)."""
  flat = base.flat()
  inside, outside = {}, {}
  for name, spec in space.items():
    value = flat[name]
    ok = (value in spec["choices"] if spec["type"] == "categorical"
          else spec["low"] <= value <= spec["high"])
    (inside if ok else outside)[name] = value
  return inside, outside


def enqueue_baseline(study, base: Config, space: dict[str, dict[str, Any]]) -> str:
  """Queues the flagfile's own values as the first trial of a new study, so its report shows
  the setting every other trial must beat (a value outside the space is left to the sampler,
  as a regularizer's weight of 0 is where the space has only positive weights); returns a
  line saying what was queued."""
  if study.get_trials(deepcopy=False):
    return ""
  inside, outside = baseline_values(base, space)
  if not inside:
    return "no baseline trial: none of the flagfile's values lies inside the space"
  study.enqueue_trial(inside)
  drawn = (f"; drawn by the sampler, the flagfile's value being outside the space: "
           f"{', '.join(f'{k} (flagfile {v})' for k, v in sorted(outside.items()))}"
           if outside else "")
  return f"trial 0 is the flagfile's own setting: {inside}{drawn}"


def _is_locked(folder: Path) -> bool:
  """Whether a live run holds ``folder``'s lock."""
  lock = folder / runfiles.LOCK
  if not lock.exists():
    return False
  with open(lock, "a", encoding="utf-8") as f:
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
  return False


def retry_stale_trials(study, study_dir: Path) -> int:
  """Marks trials left running by a killed worker as failed and queues their values again;
  returns how many."""
  optuna = _optuna()
  now = datetime.datetime.now()
  stale = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
           if (now - t.datetime_start).total_seconds() > STALE_AFTER_SECONDS
           and not _is_locked(_trial_dir(study_dir, t.number))]
  retried = 0
  for t in stale:
    try:
      study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    except (RuntimeError, ValueError):  # another worker marked it first
      continue
    study.enqueue_trial(t.params)
    retried += 1
  return retried


def finished_trials(study) -> int:
  optuna = _optuna()
  done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
  return len(study.get_trials(deepcopy=False, states=done))


def run_trial(study, study_dir: Path, base: Config, space: dict, data, spec: dict) -> None:
  """Asks the study for a trial, trains it, tells the result."""
  optuna = _optuna()
  trial = study.ask()
  values = suggest(trial, space)
  folder = _trial_dir(study_dir, trial.number)
  folder.mkdir(parents=True, exist_ok=True)
  print(f"starting trial {trial.number}: {values} in {folder} (log: {folder / runfiles.LOG})",
        flush=True)
  reporter = _Reporter(trial)
  try:
    config = base.replace(**values)
    with open(folder / runfiles.LOG, "a", encoding="utf-8") as log_file:
      def log(line: str) -> None:
        log_file.write(line + "\n")
        log_file.flush()
      results = loop.train(config, data, folder, log=log, data_spec=spec, callbacks=[reporter])
  except (ValueError, loop.Diverged) as err:
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    print(f"trial {trial.number}: failed ({err}) {values}", flush=True)
    return
  mrr = results["metrics"]["valid"]["realistic"]["mrr"]
  if reporter.pruned:
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
  else:
    study.tell(trial, mrr)
  print(f"trial {trial.number}: valid MRR {mrr:.4f}{' (pruned)' if reporter.pruned else ''} "
        f"{values}", flush=True)


def trials_table(study) -> str:
  """A markdown table of the study's trials: number, state, valid MRR, seconds, values."""
  rows = ["| trial | state | valid MRR | seconds | values |", "|---:|---|---:|---:|---|"]
  for t in study.get_trials(deepcopy=False):
    seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
               if t.datetime_complete and t.datetime_start else None)
    value = t.value if t.value is not None else (
        max(t.intermediate_values.values()) if t.intermediate_values else None)
    rows.append(f"| {t.number} | {t.state.name.lower()} | "
                f"{'' if value is None else f'{value:.4f}'} | "
                f"{'' if seconds is None else f'{seconds:.0f}'} | "
                f"{json.dumps(t.params, sort_keys=True)} |")
  return "\n".join(rows)


def write_best_flagfile(study, study_dir: Path, base_flags: list[str]) -> Path:
  """``S/best.flags``: the launcher flags the sweep ran with (the flagfile's own budget, not
  the trials'), each flag once, the best trial's values in place of the searched ones (a
  flagfile for ``python -m hale_jax.launch``)."""
  best = study.best_trial
  chosen = {f"--{name}": f"--{name}={str(value).lower() if isinstance(value, bool) else value}"
            for name, value in sorted(best.params.items())}
  kept = [flag for flag in base_flags if _flag_name(flag) not in chosen]
  lines = [f"# hale_jax sweep: best of {finished_trials(study)} trials, valid MRR "
           f"{best.value:.4f} (trial {best.number}); the flagfile's budget, not the trials'",
           *kept, *chosen.values()]
  path = study_dir / "best.flags"
  runfiles.write_text(path, "\n".join(lines) + "\n")
  return path


def _flag_name(flag: str) -> str:
  """``--lam`` of ``--lam=0.3``; ``--pos_square`` of ``--nopos_square``."""
  name = flag.split("=", 1)[0]
  return "--" + name[4:] if name.startswith("--no") and "=" not in flag else name


def plot_study(study, path: Path) -> Path | None:
  """``S/study.png``: valid MRR per trial, and Optuna's parameter importances."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel  # an optional extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("matplotlib is not installed: no study.png", file=sys.stderr)
    return None
  optuna = _optuna()
  trials = [t for t in study.get_trials(deepcopy=False) if t.value is not None
            or t.intermediate_values]
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  for state, colour in (("COMPLETE", "tab:blue"), ("PRUNED", "tab:gray")):
    chosen = [t for t in trials if t.state.name == state]
    left.scatter([t.number for t in chosen],
                 [t.value if t.value is not None else max(t.intermediate_values.values())
                  for t in chosen], color=colour, label=state.lower())
  left.set(xlabel="trial", ylabel="valid MRR (best of the run)")
  left.legend()
  try:
    importances = optuna.importance.get_param_importances(study)
  except (ValueError, RuntimeError):  # too few complete trials
    importances = {}
  right.barh(list(importances), list(importances.values()))
  right.set(xlabel="importance (fANOVA)", title="parameters" if importances else
            "importances need more complete trials")
  fig.tight_layout()
  with runfiles.atomic_write(path) as f:
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)
  return path


def _define_flags() -> None:
  options.define_config_flags(FLAGS)
  options.define_launch_flags(FLAGS)
  flags.DEFINE_string("study_dir", None, "The study's folder (study.db and trial run folders).",
                      required=True)
  flags.DEFINE_string("space", None, "The search space, a JSON file (see the module docstring).")
  flags.DEFINE_integer("trials", 20, "Finished (complete or pruned) trials the study should have.")
  flags.DEFINE_float("max_seconds_per_trial", None, "Training budget of each trial (default: "
                     "the flagfile's --max_seconds).")
  flags.DEFINE_integer("max_epochs_per_trial", None, "Epoch budget of each trial (default: the "
                       "flagfile's --max_epochs).")
  flags.DEFINE_enum("pruner", "median", ["median", "halving", "none"], "Stops bad trials early.")
  flags.DEFINE_integer("prune_from_epoch", 1, "The median pruner judges a trial from this "
                       "epoch on (raise it where valid MRR starts near 0 for a few epochs).",
                       lower_bound=1)
  flags.DEFINE_bool("baseline_trial", True, "A new study's first trial runs the flagfile's own "
                    "values (where they lie inside the space), the setting to beat.")
  flags.DEFINE_bool("report", False, "Only print the report of the study as it is.")


def _launch_flags() -> list[str]:
  """The launcher flags this sweep was given (from its flagfile or its command line), as a
  flagfile holds them; the trial budget is the sweep's, not part of them."""
  fv = flags.FlagValues()
  options.define_config_flags(fv)
  options.define_launch_flags(fv)
  return [FLAGS[name].serialize() for name in fv
          if FLAGS[name].present and name not in ("workdir", "overwrite")]


def report(study, study_dir: Path) -> None:
  print(trials_table(study))
  if any(t.value is not None for t in study.get_trials(deepcopy=False)):
    best = write_best_flagfile(study, study_dir, _launch_flags())
    print(f"best flagfile: {best}; train with it: python -m hale_jax.launch --flagfile={best}")
  png = plot_study(study, study_dir / "study.png")
  if png:
    print(f"plot: {png}")


@cli.user_errors
def main(argv):
  cli.no_arguments(argv)
  study_dir = Path(FLAGS.study_dir)
  study = open_study(study_dir, FLAGS.pruner, FLAGS.prune_from_epoch)
  if not FLAGS.report:
    _search(study, study_dir)
  report(study, study_dir)


def _search(study, study_dir: Path) -> None:
  if not FLAGS.space:
    raise ValueError("give --space=FILE (or --report to see the study as it is)")
  space = parse_space(FLAGS.space)
  overrides = {k: v for k, v in (("max_seconds", FLAGS.max_seconds_per_trial),
                                 ("max_epochs", FLAGS.max_epochs_per_trial)) if v is not None}
  base = options.config_from_flags(FLAGS, **overrides)
  spec = options.data_spec_from_flags(FLAGS)
  data = spec.load()
  if FLAGS.baseline_trial:
    said = enqueue_baseline(study, base, space)
    if said:
      print(said, flush=True)
  retried = retry_stale_trials(study, study_dir)
  if retried:
    print(f"{retried} trial(s) left running by a stopped worker: marked failed, tried again")
  while finished_trials(study) < FLAGS.trials:
    run_trial(study, study_dir, base, space, data, spec)


def run():
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run()
