"""Command line: ``python -m hale_jax.predict --workdir=W --relation=R (--head=H | --tail=T)``
or ``--queries=FILE`` for a whole file of queries.

Prints the ``--k`` best answers of ``(H, R, ?)`` or ``(?, R, T)`` under a run's best
parameters (:mod:`hale_jax.trained_model`): rank, name, label (when the run folder has label files)
and score (higher is better: ``TrainedModel.score`` of the triple as asked, a head query's
being ``(tail, reciprocal relation, answer)``).  Names may also be given by an unambiguous label.  With ``--filtered``
(default) answers already known from train, valid or test are left out.  ``--queries`` takes
``head<TAB>relation<TAB>?`` and ``?<TAB>relation<TAB>tail`` lines and writes one answer per
line (``--format=tsv``, after a ``#`` header line naming the columns) or a JSON list (``--format=json``) to stdout or ``--output``, a batch
at a time (memory does not grow with the file; :mod:`hale_jax.topk` ranks in bounded memory),
with a progress line on stderr every ``--progress_seconds`` of a long file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags

from hale_jax import cli, inference, runfiles, trained_model
from hale_jax.progress import PROGRESS_SECONDS, ProgressLine

FLAGS = flags.FLAGS
SCORE_MEANING = "score: higher is better (the model's score of the triple, as TrainedModel.score)"
# The first line of a --format=tsv answer file ("#" lines are comments to the queries reader).
TSV_HEADER = f"# head\trelation\ttail\trank\tanswer\tlabel\tscore ({SCORE_MEANING})\n"


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The --workdir of a hale_jax run.", required=True)
  flags.DEFINE_string("relation", None, "Relation name or label (or its reciprocal's name).")
  flags.DEFINE_string("head", None, "Head entity name or label: rank tails of (head, relation, ?).")
  flags.DEFINE_string("tail", None, "Tail entity name or label: rank heads of (?, relation, tail).")
  flags.DEFINE_string("queries", None, "A file of queries, one per line: head<TAB>relation<TAB>? "
                      "or ?<TAB>relation<TAB>tail.")
  flags.DEFINE_enum("format", "tsv", ["tsv", "json"], "--queries: output format.")
  flags.DEFINE_string("output", None, "--queries: write the answers here instead of stdout.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output file.")
  flags.DEFINE_integer("k", 10, "How many answers per query.")
  flags.DEFINE_bool("filtered", True, "Leave out answers known from train, valid or test.")
  flags.DEFINE_float("progress_seconds", PROGRESS_SECONDS, "--queries: seconds between progress "
                     "lines on stderr (a file answered sooner prints none).")


def _print_one(model: trained_model.TrainedModel) -> None:
  if FLAGS.relation is None or (FLAGS.head is None) == (FLAGS.tail is None):
    raise ValueError("give --relation and exactly one of --head (to rank tails) and --tail (to "
                     "rank heads), or --queries=FILE")
  answers = (model.predict_tails(FLAGS.head, FLAGS.relation, FLAGS.k, FLAGS.filtered)
             if FLAGS.head is not None
             else model.predict_heads(FLAGS.relation, FLAGS.tail, FLAGS.k, FLAGS.filtered))[0]
  query = (f"({FLAGS.head}, {FLAGS.relation}, ?)" if FLAGS.head is not None
           else f"(?, {FLAGS.relation}, {FLAGS.tail})")
  print(f"{query}  {'filtered' if FLAGS.filtered else 'unfiltered'}; {SCORE_MEANING}")
  width = max([len(a.name) for a in answers] + [6])
  labelled = any(a.label for a in answers)
  print(f"{'rank':>4}  {'entity':<{width}}  " + ("label  " if labelled else "") + "score")
  for rank, a in enumerate(answers, start=1):
    label = f"{a.label or '':<6} " if labelled else ""
    print(f"{rank:>4}  {a.name:<{width}}  {label}{a.score:.6g}")


def _tsv_lines(queries, answers):
  for q, ans in zip(queries, answers):
    for rank, a in enumerate(ans, start=1):
      yield f"{chr(9).join(q)}\t{rank}\t{a.name}\t{a.label or ''}\t{a.score:.6g}\n"


def _json_items(queries, answers):
  for q, ans in zip(queries, answers):
    yield json.dumps({"query": list(q), "answers": [a._asdict() for a in ans]},
                     allow_nan=False)


def _write_answers(model: trained_model.TrainedModel, numbered: list, out) -> None:
  """Answers the queries ``QUERY_BATCH`` at a time, writing each batch as it is done (only a
  batch's answers are held); a long file reports progress on stderr."""
  first = True
  progress = ProgressLine(f"answering {FLAGS.queries}", len(numbered), cli.warn,
                          FLAGS.progress_seconds)
  out.write("[\n" if FLAGS.format == "json" else TSV_HEADER)
  for start in range(0, len(numbered), inference.QUERY_BATCH):
    batch = numbered[start:start + inference.QUERY_BATCH]
    inference.check_names(model, batch, FLAGS.queries)
    queries = [q for _, q in batch]
    answers = inference.answer_queries(model, queries, FLAGS.k, FLAGS.filtered)
    if FLAGS.format == "json":
      for item in _json_items(queries, answers):
        out.write(("" if first else ",\n") + item)
        first = False
    else:
      out.writelines(_tsv_lines(queries, answers))
    progress.update(start + len(batch))
  if FLAGS.format == "json":
    out.write("\n]\n")


def _answer_file(model: trained_model.TrainedModel) -> None:
  numbered = inference.parse_query_lines(FLAGS.queries)
  if FLAGS.output is None:
    _write_answers(model, numbered, sys.stdout)
    return
  output = Path(FLAGS.output)
  with runfiles.atomic_write(output, "w") as out:  # an earlier output stays until the end
    _write_answers(model, numbered, out)
  print(f"{len(numbered)} queries answered into {output}", file=sys.stderr)


@cli.user_errors
def main(argv):
  cli.no_arguments(argv)
  if FLAGS.queries and FLAGS.output is not None:
    cli.check_output(FLAGS.output, FLAGS.overwrite)
  model = trained_model.load(FLAGS.workdir, log=cli.warn)
  if FLAGS.queries:
    _answer_file(model)
  else:
    _print_one(model)


def run():
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run()
