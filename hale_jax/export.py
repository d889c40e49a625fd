"""Command line: ``python -m hale_jax.export --workdir=W --format=npz|tsv [--output=PATH]``.

Writes a run's best parameters with entity and relation names
(:func:`hale_jax.inference.export_run`); by default to ``W/export.npz`` or ``W/export_tsv/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging

from hale_jax import inference
from hale_jax.data import one_line

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The --workdir of a hale_jax run.", required=True)
  flags.DEFINE_bool("allow_changed_data", False, "Use the run although its data files changed "
                    "since training.")
  flags.DEFINE_enum("format", "npz", ["npz", "tsv"],
                    "npz: one NumPy file; tsv: a folder of name<TAB>values files.")
  flags.DEFINE_string("output", None, "Where to write; default W/export.npz or W/export_tsv.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing output.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # no INFO lines from JAX's backend search
  default = "export.npz" if FLAGS.format == "npz" else "export_tsv"
  output = FLAGS.output or Path(FLAGS.workdir) / default
  try:
    path = inference.export_run(FLAGS.workdir, FLAGS.format, output, overwrite=FLAGS.overwrite,
                                allow_changed_data=FLAGS.allow_changed_data)
  except (ValueError, FileNotFoundError, FileExistsError) as err:  # DataError is a ValueError
    print(f"error: {one_line(err)}", file=sys.stderr)
    sys.exit(2)
  print(f"exported {FLAGS.format} to {path}")


def run():
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
