"""Command line: ``python -m hale_jax.launch [--flagfile=launch/wn18rr.flags] [--flags]``.

With no flags it trains RotL on a small generated knowledge graph (offline).  This module alone reads absl flags: one per field of
:class:`hale_jax.config.Config` (``hale_jax.options``), and the launcher's own; the training
itself is :func:`hale_jax.pipeline.run_training`, as ``hale_jax.train`` does it from Python.
"""

from __future__ import annotations

import sys

import jax
from absl import flags

from hale_jax import cli, options, pipeline
from hale_jax.checkpoints import UnreadableCheckpoints
from hale_jax.loop import Diverged, Interrupted
from hale_jax.rundir import WorkdirError
from hale_jax.runfiles import OutputError
from hale_jax.stopping import StopRequest

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The launcher's flags: one per config field, and its own (data, run folder, processes).
  Defined only when it runs as a command, so importing this module leaves absl's FLAGS alone."""
  options.define_config_flags(FLAGS)
  options.define_launch_flags(FLAGS)


def _init_distributed() -> None:
  """``jax.distributed.initialize`` from the flags, before JAX starts its backends."""
  given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if not FLAGS.distributed and all(v is None for v in given):
    return
  # CPU processes need gloo for cross-process collectives; GPUs use NCCL whatever this says.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if FLAGS.distributed:
    jax.distributed.initialize()
    return
  if any(v is None for v in given):
    raise ValueError("multi-host needs all of --coordinator_address, --num_processes and "
                     "--process_id (or --distributed to read them from the cluster)")
  if not 0 <= FLAGS.process_id < FLAGS.num_processes:
    raise ValueError(f"--process_id must be in [0, {FLAGS.num_processes}), got "
                     f"{FLAGS.process_id}")
  jax.distributed.initialize(FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                             process_id=FLAGS.process_id)


@cli.user_errors
def main(argv):
  cli.no_arguments(argv)
  _init_distributed()
  # Progress lines from process 0 only; errors from every process.
  log = print if jax.process_index() == 0 else (lambda line: None)
  stop = StopRequest()
  try:
    config = options.config_from_flags(FLAGS)
    spec = options.data_spec_from_flags(FLAGS)
    pipeline.run_training(config, spec, FLAGS.workdir, log=log, overwrite=FLAGS.overwrite,
                          should_stop=stop, allow_changed_data=FLAGS.allow_changed_data,
                          extra={"argv": sys.argv, "flags": FLAGS.flags_into_string()})
  except Interrupted as err:
    print(f"stopped: {err}", file=sys.stderr)
    cli.exit_now(stop.exit_code())
  except Diverged as err:
    cli.fail(err, status=3)
  except OutputError as err:
    cli.fail(f"{err}; once it can be written, rerun the same command: the run resumes from "
             f"its last checkpoint")
  except (WorkdirError, UnreadableCheckpoints) as err:  # the other user errors: cli.user_errors
    cli.fail(err)


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
