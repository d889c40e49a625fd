"""Command line: ``python -m hale_jax.export --workdir=W --format=npz|tsv [--output=PATH]``.

Writes a run's best parameters with entity and relation names
(:func:`hale_jax.inference.export_run`); by default to ``W/export.npz`` or ``W/export_tsv/``.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from hale_jax import cli, inference

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The --workdir of a hale_jax run.", required=True)
  flags.DEFINE_enum("format", "npz", ["npz", "tsv"],
                    "npz: one NumPy file; tsv: a folder of name<TAB>values files.")
  flags.DEFINE_string("output", None, "Where to write; default W/export.npz or W/export_tsv.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing output.")


@cli.user_errors
def main(argv):
  cli.no_arguments(argv)
  default = "export.npz" if FLAGS.format == "npz" else "export_tsv"
  output = FLAGS.output or Path(FLAGS.workdir) / default
  path = inference.export_run(FLAGS.workdir, FLAGS.format, output, overwrite=FLAGS.overwrite)
  print(f"exported {FLAGS.format} to {path}")


def run():
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run()
