"""Training from Python: ``model = hale_jax.train(model="RotL", dim=32, max_seconds=30)``.

:func:`train` takes what the launcher's flags take, as keyword settings named like the flags
(``hale_jax.options``: every config field, and where the data comes from: ``dataset``,
``data_dir``, ``data_file`` with ``split``, ``train_file`` ..., ``columns``, ...), or a
:class:`~hale_jax.config.Config` with settings on top.  It builds the same config and data
spec, trains into the same run folder (``run.json``, checkpoints, ``metrics.jsonl``,
``results.json``), with the same callbacks and log lines, resumes when called again on the same
``workdir``, and returns the trained model (``hale_jax.load(workdir)``).
``python -m hale_jax.launch`` is a thin command over :func:`run_training`, as :func:`train` is.
"""

from __future__ import annotations

import datetime
import difflib
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
from absl import flags

from hale_jax import dataspec, loop, options, trained_model
from hale_jax.config import Config
from hale_jax.data import KGData
from hale_jax.dataspec import DataSpec

Log = Callable[[str], None]
# Launcher flags that are not settings of a run: multi-host start-up (the launcher's own), and
# those :func:`train` takes as arguments.
_LAUNCHER_ONLY = ("coordinator_address", "num_processes", "process_id", "distributed")
_ARGUMENTS = ("workdir", "overwrite", "allow_changed_data")
# The settings that say where the data comes from (``data=`` is the other way).
DATA_SETTINGS = ("dataset", "data_dir", "data_file", "train_file", "valid_file", "test_file")


def default_workdir(data_name: str, config: Config) -> Path:
  """``runs/<dataset>-<model>-<dim>d-<time>``, created here; a name taken by another run
  (two jobs started in the same second) gets a ``-2``, ``-3`` ... suffix."""
  base = Path("runs") / (f"{data_name}-{config.model.model}-{config.model.dim}d-"
                         f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
  base.parent.mkdir(parents=True, exist_ok=True)
  for n in range(1, 10_000):
    path = base if n == 1 else base.with_name(f"{base.name}-{n}")
    try:
      path.mkdir()
      return path
    except FileExistsError:
      continue
  raise ValueError(f"no free run folder name next to {base}; pass --workdir")


def run_training(config: Config, data: DataSpec | KGData, workdir: str | os.PathLike | None,
                 *, log: Log = print, overwrite: bool = False,
                 allow_changed_data: bool = False, should_stop: Any = None,
                 callbacks: Sequence[Any] = (), extra: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Any], Path]:
  """Loads the data (a spec is loaded and kept in ``run.json``; a ``KGData`` is trained on as
  given), picks the run folder (``workdir``, or a new :func:`default_workdir`) and trains
  (:func:`hale_jax.loop.train`).  Returns the results and the run folder.  A folder this
  function named is removed again when the run is refused before writing anything."""
  spec = data if isinstance(data, DataSpec) else None
  data = spec.load(log=log) if spec is not None else data
  if jax.process_count() > 1 and not workdir:
    raise ValueError("a multi-host run needs --workdir: a folder that every process sees "
                     "(each would otherwise make up its own time-stamped name)")
  path = Path(workdir) if workdir else default_workdir(data.name, config)
  try:
    results = loop.train(config, data, path, log=log, overwrite=overwrite, data_spec=spec,
                         should_stop=should_stop, allow_changed_data=allow_changed_data,
                         callbacks=callbacks, extra=extra)
  except ValueError:
    if not workdir and path.is_dir() and not any(path.iterdir()):
      path.rmdir()  # the name made up here, refused before any file
    raise
  return results, path


def setting_names(config_cls: type = Config) -> list[str]:
  """Every keyword setting :func:`train` takes: the config fields, then the data flags."""
  launch = flags.FlagValues()
  options.define_launch_flags(launch)
  return [f.name for _, f, _ in options.config_fields(config_cls)] + [
      name for name in launch if name not in _LAUNCHER_ONLY + _ARGUMENTS]


def _unknown(name: str, known: Sequence[str]) -> ValueError:
  close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
  hint = f"; did you mean {', '.join(close)}?" if close else ""
  if name in _LAUNCHER_ONLY:
    return ValueError(f"{name} starts a multi-host run: use python -m hale_jax.launch")
  return ValueError(f"unknown setting {name!r}{hint} (the settings are the launcher's flags, "
                    f"docs/flags.md)")


def _set(fv: flags.FlagValues, name: str, value: Any) -> None:
  """Sets one flag as the command line would (its type and allowed values checked)."""
  flag = fv[name]
  if value is None:
    if flag.default is not None:
      raise ValueError(f"{name}=None: give a value (default {flag.default!r})")
    flag.value = None
    return
  try:
    flag.parse(os.fspath(value) if isinstance(value, os.PathLike) else value)
  except flags.IllegalFlagValueError as err:
    raise ValueError(f"{name}={value!r}: {str(err).split(': ', 1)[-1]}") from None


def _data_settings(data: Any) -> dict[str, Any]:
  """``data=`` as the setting it stands for: a folder is ``data_dir``, a file ``data_file``,
  any other name ``dataset`` (a benchmark, ``synthetic`` or ``powerlaw:N``)."""
  if isinstance(data, (str, os.PathLike)):
    path = Path(data)
    if path.is_dir():
      return {"data_dir": str(path)}
    if path.is_file():
      return {"data_file": str(path)}
    return {"dataset": os.fspath(data)}
  raise TypeError(f"data= takes a KGData, a hale_jax.dataspec spec, a folder, a file or a "
                  f"dataset name; got {type(data).__name__}")


def resolve(config: Config | None, data: Any, settings: Mapping[str, Any]
            ) -> tuple[Config, DataSpec | KGData]:
  """The config and the data (spec) that :func:`train`'s arguments describe, every value
  checked as the launcher checks its flags."""
  config_cls = type(config) if config is not None else Config
  known = setting_names(config_cls)
  for name in settings:
    if name not in known:
      raise _unknown(name, known)
  given = [k for k in DATA_SETTINGS if k in settings]
  if data is not None and given:
    raise ValueError(f"give the data once: data= or {', '.join(given)}=, not both")
  fv = flags.FlagValues()
  options.define_config_flags(fv, config_cls)
  options.define_launch_flags(fv)
  fv(["hale_jax"])
  for name, value in (config.flat() if config is not None else {}).items():
    fv[name].value = value  # a Config's values are checked already
  if data is not None and not isinstance(data, (KGData, DataSpec)):
    settings = {**_data_settings(data), **settings}
  for name, value in settings.items():
    _set(fv, name, value)
  config = options.config_from_flags(fv, config_cls)
  if isinstance(data, (KGData, DataSpec)):
    return config, data
  return config, options.data_spec_from_flags(fv)


def _jsonable(settings: Mapping[str, Any]) -> dict[str, Any]:
  """The settings as ``results.json`` keeps them (paths and other objects as text)."""
  plain = (str, int, float, bool, type(None))
  return {k: v if isinstance(v, plain) else str(os.fspath(v) if isinstance(v, os.PathLike)
                                                else v) for k, v in settings.items()}


def train(config: Config | None = None, *, data: Any = None,
          workdir: str | os.PathLike | None = None, overwrite: bool = False,
          allow_changed_data: bool = False, log: Log = print, callbacks: Sequence[Any] = (),
          should_stop: Callable[[], str | None] | None = None,
          **settings: Any) -> trained_model.TrainedModel:
  """Trains as ``python -m hale_jax.launch`` does and returns the trained model.

  Args:
    config: a :class:`~hale_jax.config.Config`; ``settings`` change its fields.  Default: the
      launcher's defaults.
    data: a :class:`~hale_jax.data.KGData`, a ``hale_jax.dataspec`` spec, a folder (of
      ``train.txt``, ``valid.txt``, ``test.txt``), one file of triples to split, or a dataset
      name; or leave it out and use the settings ``dataset``, ``data_dir``, ``data_file``,
      ``train_file`` ... (default: the small generated graph).
    workdir: the run folder; default ``runs/<dataset>-<model>-<dim>d-<time>``.  Called again
      on the same folder, a run resumes from its last checkpoint (or, finished, returns at
      once; a larger budget trains on).
    overwrite: start over in a folder that holds another run's results.
    allow_changed_data: resume although the data files changed since the run started.
    log: where the run's lines go (default ``print``).
    callbacks: more hooks (``hale_jax.callbacks``) beside the launcher's own.
    should_stop: polled after each segment; a reason checkpoints and raises
      :class:`hale_jax.loop.Interrupted` (``hale_jax.stopping.StopRequest`` does this on a
      signal).
    **settings: the launcher's flags by name (``model="RotL", dim=32, max_seconds=30``);
      :func:`setting_names` lists them.

  Raises:
    ValueError: an unknown setting (with the close names), a bad value or combination; a
      :class:`~hale_jax.data.DataError` for bad data files.
  """
  config, source = resolve(config, data, settings)
  _, path = run_training(config, source, workdir, log=log, overwrite=overwrite,
                         allow_changed_data=allow_changed_data, should_stop=should_stop,
                         callbacks=callbacks,
                         extra={"python": "hale_jax.train", "settings": _jsonable(settings)})
  return trained_model.load(path, log=log)
