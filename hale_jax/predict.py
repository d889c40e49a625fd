"""Command line: ``python -m hale_jax.predict --workdir=W --relation=R (--head=H | --tail=T)``.

Prints the ``--k`` entities closest to ``(H, R, ?)`` or ``(?, R, T)`` under a run's best
parameters (:func:`hale_jax.inference.top_k`): rank, name and squared distance (smaller is
better; for runs with entity biases ``h(c_r d^2) - b_t``, what their ranking sorts).  With ``--filtered`` (default) answers already known from train, valid or test are
left out.
"""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The --workdir of a hale_jax run.", required=True)
  flags.DEFINE_string("relation", None, "Relation name (or <name>_reverse).", required=True)
  flags.DEFINE_string("head", None, "Head entity name: rank tails of (head, relation, ?).")
  flags.DEFINE_string("tail", None, "Tail entity name: rank heads of (?, relation, tail).")
  flags.DEFINE_integer("k", 10, "How many entities to print.")
  flags.DEFINE_bool("filtered", True, "Leave out answers known from train, valid or test.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from hale_jax import inference  # pylint: disable=import-outside-toplevel
  from hale_jax.data import one_line  # pylint: disable=import-outside-toplevel
  try:
    run, data, params = inference.load_run(FLAGS.workdir)
    answers = inference.top_k(params, run["config"]["model"], data, head=FLAGS.head,
                              relation=FLAGS.relation, tail=FLAGS.tail, k=FLAGS.k,
                              filtered=FLAGS.filtered,
                              activation=inference.run_activation(run))
  except (ValueError, FileNotFoundError, FileExistsError) as err:  # DataError is a ValueError
    print(f"error: {one_line(err)}", file=sys.stderr)
    sys.exit(2)
  query = (f"({FLAGS.head}, {FLAGS.relation}, ?)" if FLAGS.head is not None
           else f"(?, {FLAGS.relation}, {FLAGS.tail})")
  from hale_jax import models  # pylint: disable=import-outside-toplevel
  measure = ("h(c_r d^2) - b_t (the run learned entity biases)" if models.has_entity_bias(params)
             else "squared distance")
  print(f"{query}  {'filtered' if FLAGS.filtered else 'unfiltered'}, {measure}")
  width = max([len(n) for n, _ in answers] + [6])
  print(f"{'rank':>4}  {'entity':<{width}}  distance")
  for rank, (name, dist) in enumerate(answers, start=1):
    print(f"{rank:>4}  {name:<{width}}  {dist:.6g}")


def run():
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
