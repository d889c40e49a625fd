"""Command line: ``python -m hale_jax.labels --codex_entities=entities.json --output=FOLDER``.

Turns CoDEx's entity metadata (``data/entities/en/entities.json`` of the CoDEx release: a JSON
map from Wikidata Q-id to ``{"label": ..., "description": ...}``) into ``entity_labels.tsv``
(``id<TAB>label``), the file a dataset folder may hold beside ``relation_labels.tsv`` so that
predictions show labels beside ids.  Only ids that occur in the folder's splits are written
when ``--output`` holds ``train.txt``.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags

from hale_jax import cli, runfiles

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("codex_entities", None, "CoDEx's entities.json.", required=True)
  flags.DEFINE_string("output", None, "The dataset folder to write entity_labels.tsv into.",
                      required=True)
  flags.DEFINE_bool("overwrite", False, "Replace an existing entity_labels.tsv.")


def codex_labels(path: str | Path) -> dict[str, str]:
  """``{Q-id: label}`` from CoDEx's ``entities.json``; raises ValueError if it is not one."""
  try:
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, ValueError) as err:
    raise ValueError(f"{path}: cannot be read as JSON ({err})") from None
  if not isinstance(entries, dict):
    raise ValueError(f"{path}: expected a JSON object mapping ids to {{'label': ...}}")
  labels = {}
  for key, value in entries.items():
    label = value.get("label") if isinstance(value, dict) else None
    if isinstance(label, str) and label.strip():
      labels[key] = " ".join(label.split())  # one line, no tabs
  return labels


def used_ids(folder: Path) -> set[str] | None:
  """The entity ids of a dataset folder's splits, or None without ``train.txt``."""
  if not (folder / "train.txt").is_file():
    return None
  ids: set[str] = set()
  for split in ("train", "valid", "test"):
    path = folder / f"{split}.txt"
    if path.is_file():
      for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) == 3:
          ids.update((fields[0], fields[2]))
  return ids


def write_labels(labels: dict[str, str], folder: Path, overwrite: bool = False) -> Path:
  """Writes ``folder/entity_labels.tsv``; returns its path."""
  target = folder / runfiles.LABELS["entity"]
  cli.check_output(target, overwrite)
  folder.mkdir(parents=True, exist_ok=True)
  runfiles.write_text(target, "".join(f"{k}\t{v}\n" for k, v in sorted(labels.items())))
  return target


@cli.user_errors
def main(argv):
  cli.no_arguments(argv)
  folder = Path(FLAGS.output)
  labels = codex_labels(FLAGS.codex_entities)
  wanted = used_ids(folder)
  if wanted is not None:
    labels = {k: v for k, v in labels.items() if k in wanted}
  target = write_labels(labels, folder, FLAGS.overwrite)
  print(f"{len(labels)} entity labels written to {target}")


def run():
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run()
