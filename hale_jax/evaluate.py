"""Command line: ``python -m hale_jax.evaluate --workdir=W [--split=test] [--output=FILE]``.

Re-ranks a split with a run's best parameters (:meth:`hale_jax.trained_model.TrainedModel.evaluate`) by
the run's ``--eval_protocol`` (or ``--protocol``) and prints MRR, MR and Hits@{1,3,10} for the
realistic, pessimistic and optimistic tie conventions.
"""

from __future__ import annotations


from absl import flags

from hale_jax import cli, runfiles, trained_model
from hale_jax.config import EVAL_PROTOCOLS

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The --workdir of a hale_jax run.", required=True)
  flags.DEFINE_enum("split", "test", ["test", "valid"], "Split to rank.")
  flags.DEFINE_integer("chunk", 256, "Queries ranked at a time (memory: chunk x entities).")
  flags.DEFINE_enum("protocol", None, list(EVAL_PROTOCOLS), "How to rank: filtered, or ogb "
                    "(against the negatives the dataset ships); default: the run's "
                    "--eval_protocol.")
  flags.DEFINE_string("output", None, "Also write the metrics as JSON to this file.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output file.")
  flags.DEFINE_enum("breakdown", None, ["direction", "relation"], "Also report the metrics "
                    "per prediction direction (tail, head) or per relation, with counts.")


def format_table(metrics: dict[str, dict[str, float]]) -> str:
  """One row per tie convention: MRR, MR, H@1, H@3, H@10."""
  lines = [f"{'ties':<12} {'MRR':>8} {'MR':>9} {'H@1':>8} {'H@3':>8} {'H@10':>8}"]
  for mode in ("realistic", "pessimistic", "optimistic"):
    m = metrics[mode]
    lines.append(f"{mode:<12} {m['mrr']:8.4f} {m['mr']:9.1f} {m['hits@1']:8.4f} "
                 f"{m['hits@3']:8.4f} {m['hits@10']:8.4f}")
  return "\n".join(lines)


def format_breakdown(groups: dict[str, dict], by: str,
                     labels: dict[str, str] | None = None) -> str:
  """One row per group (realistic ties): count, MRR, MR, H@1, H@3, H@10; with ``labels``
  (the run folder's ``relation_labels.tsv``) a group's label follows its name."""
  shown = {g: f"{g} ({labels[g]})" if labels and g in labels else str(g) for g in groups}
  width = max([len(s) for s in shown.values()] + [len(by)])
  lines = [f"{by:<{width}} {'count':>7} {'MRR':>8} {'MR':>9} {'H@1':>8} {'H@3':>8} {'H@10':>8}"]
  for group, m in groups.items():
    r = m["realistic"]
    lines.append(f"{shown[group]:<{width}} {m['count']:7d} {r['mrr']:8.4f} {r['mr']:9.1f} "
                 f"{r['hits@1']:8.4f} {r['hits@3']:8.4f} {r['hits@10']:8.4f}")
  return "\n".join(lines)


@cli.user_errors
def main(argv):
  cli.no_arguments(argv)
  if FLAGS.output:
    cli.check_output(FLAGS.output, FLAGS.overwrite)
  model = trained_model.load(FLAGS.workdir, log=cli.warn)
  protocol = FLAGS.protocol or model.protocol
  metrics = model.evaluate(FLAGS.split, FLAGS.chunk, protocol=protocol)
  what = "filtered ranking" if protocol == "filtered" else "OGB protocol (given negatives)"
  print(f"{FLAGS.workdir}: {what} of {FLAGS.split}")
  print(format_table(metrics))
  doc = {"workdir": str(FLAGS.workdir), "split": FLAGS.split, "protocol": protocol,
         "metrics": metrics}
  if FLAGS.breakdown:
    groups = model.evaluate(FLAGS.split, FLAGS.chunk, FLAGS.breakdown, protocol)
    print(f"\nrealistic ties by {FLAGS.breakdown}:")
    print(format_breakdown(groups, FLAGS.breakdown, model.labels.get(FLAGS.breakdown)))
    doc["breakdown"] = {"by": FLAGS.breakdown, "groups": groups}
  if FLAGS.output:
    runfiles.write_json(FLAGS.output, doc)
    print(f"metrics written to {FLAGS.output}")


def run():
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run()
