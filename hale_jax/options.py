"""Command-line options generated from the config: one absl flag per config field.

:func:`define_config_flags` walks the groups of :class:`hale_jax.config.Config` (or a subclass)
and defines a flag per field, named like the field, with its type, default, help text and
allowed values; :func:`config_from_flags` builds the config back from parsed flags.  Adding a
field to a config group therefore adds its flag.  The launcher's own options (where the data
comes from, the workdir, multi-host) are defined here too (:func:`define_launch_flags`), so any
program can read a flagfile of ``launch/`` exactly as the launcher does (:func:`parse_flagfile`).
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
import typing
from typing import Any, Sequence

from absl import flags

from hale_jax import config as config_lib
from hale_jax import data_file, dataspec
from hale_jax.config import Config

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def _base_type(hint: Any) -> type:
  """``float | None`` -> ``float``; a plain type stays."""
  if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1:
      return args[0]
  if hint in _DEFINE:
    return hint
  raise TypeError(f"config fields must be bool, int, float or str (optionally | None), got {hint}")


def config_fields(config_cls: type = Config) -> list[tuple[str, dataclasses.Field, type]]:
  """``(group, field, base type)`` of every config field, in declaration order."""
  out = []
  for group, kind in config_lib.group_types(config_cls).items():
    hints = typing.get_type_hints(kind)
    for f in dataclasses.fields(kind):
      out.append((group, f, _base_type(hints[f.name])))
  return out


def define_config_flags(flag_values: flags.FlagValues = flags.FLAGS,
                        config_cls: type = Config) -> None:
  """Defines one flag per field of ``config_cls`` (see the module docstring)."""
  config_lib.field_owners(config_cls)  # names unique across groups
  for _, f, kind in config_fields(config_cls):
    choices = f.metadata.get("choices")
    help_text = f.metadata.get("help", "")
    if choices is not None and kind is str:
      flags.DEFINE_enum(f.name, f.default, list(choices), help_text, flag_values=flag_values)
    else:
      _DEFINE[kind](f.name, f.default, help_text, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS,
                      config_cls: type = Config, **overrides: Any) -> Config:
  """The config the parsed flags describe, with ``overrides`` (flat field names) on top;
  raises ValueError on a bad combination."""
  return config_cls.make(**{**{f.name: flag_values[f.name].value
                               for _, f, _ in config_fields(config_cls)}, **overrides})


def define_launch_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The launcher's options that are not part of a run's config."""
  fv = flag_values
  flags.DEFINE_string("dataset", "synthetic",
                      "Dataset name (WN18RR, FB15k-237, CoDEx-S, CoDEx-M, CoDEx-L, Wikidata5M, "
                      "ogbl-wikikg2), 'synthetic' for the small generated graph, or 'powerlaw:N' "
                      "for a generated graph of N entities and 10 N triples. Looked up in "
                      "$HALE_DATA_DIR/<name>, then the user cache, then downloaded.",
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "A folder with train.txt, valid.txt, test.txt; "
                      "overrides --dataset.", flag_values=fv)
  flags.DEFINE_string("workdir", None, "Output folder; default "
                      "runs/<dataset>-<model>-<dim>d-<time>.", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace the results of an earlier run in --workdir.",
                    flag_values=fv)
  flags.DEFINE_bool("allow_changed_data", False, "Resume although the data files changed "
                    "since the run started (run.json keeps their sha256).", flag_values=fv)
  flags.DEFINE_bool("strip_whitespace", False, "Strip spaces around every field of the data "
                    "files instead of refusing such fields.", flag_values=fv)
  flags.DEFINE_string("data_file", None, "One file of triples (.tsv/.txt or .csv) to split "
                      "into train, valid and test (--split, --split_seed); the split is kept "
                      "in the run folder.", flag_values=fv)
  flags.DEFINE_string("columns", "head,relation,tail", "--data_file / split files: the role of "
                      "each column, left to right (head, relation, tail once each; any other "
                      "name is a column to ignore).", flag_values=fv)
  flags.DEFINE_string("delimiter", None, "--data_file / split files: the field separator (one "
                      "character, or tab, comma, semicolon, space, pipe, whitespace); default "
                      "from the suffix: tab for .tsv/.txt, comma for .csv.", flag_values=fv)
  flags.DEFINE_bool("header", False, "--data_file / split files: skip the first line.",
                    flag_values=fv)
  flags.DEFINE_string("split", "0.8,0.1,0.1", "--data_file: train,valid,test fractions "
                      "(summing to 1); every valid and test entity and relation is kept in "
                      "train.", flag_values=fv)
  flags.DEFINE_integer("split_seed", 0, "--data_file: seed of the split.", flag_values=fv)
  flags.DEFINE_string("train_file", None, "Explicit split files (with --valid_file and "
                      "--test_file), in any --columns order.", flag_values=fv)
  flags.DEFINE_string("valid_file", None, "See --train_file.", flag_values=fv)
  flags.DEFINE_string("test_file", None, "See --train_file.", flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0; with "
                      "--num_processes and --process_id, calls jax.distributed.initialize.",
                      flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Multi-host: the number of processes.",
                       flag_values=fv)
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's index, 0 .. n-1.",
                       flag_values=fv)
  flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() with no "
                    "arguments, so JAX reads the cluster from the environment (SLURM, Open MPI, "
                    "Kubernetes ...).", flag_values=fv)


def _reading(fv: flags.FlagValues) -> dataspec.Reading:
  """How one's own data files are read."""
  return dataspec.Reading(columns=fv.columns, delimiter=fv.delimiter, header=fv.header,
                          strip_whitespace=fv.strip_whitespace)


def data_spec_from_flags(fv: flags.FlagValues = flags.FLAGS) -> dataspec.DataSpec:
  """Where the launcher's flags say the data comes from (``hale_jax.dataspec``)."""
  split_files = [fv.train_file, fv.valid_file, fv.test_file]
  if any(split_files):
    if not all(split_files):
      raise ValueError("give all three of --train_file, --valid_file and --test_file")
    train, valid, test = (str(Path(f).resolve()) for f in split_files)
    return dataspec.SplitFiles(train, valid, test, _reading(fv))
  if fv.data_file:
    return dataspec.OneFile(str(Path(fv.data_file).resolve()),
                            data_file.parse_fractions(fv.split), fv.split_seed, _reading(fv))
  if fv.data_dir:
    return dataspec.Folder(str(Path(fv.data_dir).resolve()), fv.strip_whitespace)
  if fv.dataset.lower() == "synthetic":
    return dataspec.Synthetic()
  if fv.dataset.lower().startswith("powerlaw:"):
    count = fv.dataset.partition(":")[2].replace("_", "")
    if not count.isdigit() or int(count) < 2:
      raise ValueError(f"--dataset={fv.dataset}: expected powerlaw:N with N >= 2 entities, "
                       f"e.g. powerlaw:1000000")
    return dataspec.PowerLaw(int(count))
  return dataspec.Dataset(fv.dataset)


def parse_flagfile(path: str, extra: Sequence[str] = ()) -> flags.FlagValues:
  """The launcher's flags as ``--flagfile=path`` and then ``extra`` set them (a fresh
  ``FlagValues``, so the caller's own flags are untouched)."""
  fv = flags.FlagValues()
  define_config_flags(fv)
  define_launch_flags(fv)
  fv(["hale_jax", f"--flagfile={path}", *extra])
  return fv


def flags_markdown() -> str:
  """``docs/flags.md``: every launcher flag with its default and help, by config group."""
  lines = ["# Flags of `python -m hale_jax.launch`", "",
           "Generated from the flag definitions by `python -m hale_jax.options > docs/flags.md`;",
           "a test fails when this file and the definitions differ. Each config field is one",
           "flag (`hale_jax/config.py`); a *resumable* flag may change when a run resumes.", ""]
  fields = config_fields()
  for group in config_lib.GROUPS:
    doc = (config_lib.group_types()[group].__doc__ or "").strip()
    lines += [f"## {group}: {doc}", "", "| flag | default | help |", "|---|---|---|"]
    for g, f, _ in fields:
      if g == group:
        choices = f.metadata.get("choices")
        if f.metadata.get("registry"):  # grows with the library: named, not listed
          choices = f"the names in `{f.metadata['registry']}` (`--helpfull` lists them)"
        lines.append(_flag_row(f.name, f.default, f.metadata.get("help", ""), choices,
                               f.metadata.get("resumable")))
    lines.append("")
  fv = flags.FlagValues()
  define_launch_flags(fv)
  lines += ["## The data and the run folder", "", "| flag | default | help |", "|---|---|---|"]
  for name in fv:
    lines.append(_flag_row(name, fv[name].default, fv[name].help, None, False))
  return "\n".join(lines) + "\n"


def _flag_row(name: str, default: Any, help_text: str, choices: Sequence[str] | str | None,
              resumable: bool) -> str:
  """A table row; ``choices`` a list of values, or a phrase naming where they are listed."""
  if isinstance(choices, str):
    extra = f" One of {choices}."
  else:
    extra = f" One of: {', '.join(choices)}." if choices else ""
  extra += " *Resumable.*" if resumable else ""
  value = "" if default is None else f"`{default}`"
  return f"| `--{name}` | {value} | {help_text.replace('|', '/')}{extra} |"


if __name__ == "__main__":
  print(flags_markdown(), end="")
