"""Command line: ``python -m hale_jax.launch [--flagfile=launch/wn18rr.flags] [--flags]``.

With no flags it trains RotL on a small generated knowledge graph (offline, about a minute on
a 2-core CPU).  This module alone reads absl flags; it fills a :class:`hale_jax.train.Config`.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from absl import app, flags, logging

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "synthetic",
                    "Dataset name (WN18RR, FB15k-237, CoDEx-S, CoDEx-M, CoDEx-L), 'synthetic' "
                    "for the small generated graph, or 'powerlaw:N' for a generated graph of N "
                    "entities and 10 N triples (scale runs). Looked up in $HALE_DATA_DIR/<name>, then the user "
                    "cache, then downloaded.")
flags.DEFINE_string("data_dir", None, "A folder with train.txt, valid.txt, test.txt; overrides "
                    "--dataset.")
flags.DEFINE_string("workdir", None, "Output folder; default runs/<dataset>-<model>-<dim>d-<time>.")
flags.DEFINE_bool("overwrite", False, "Replace the results of an earlier run in --workdir.")
flags.DEFINE_enum("model", "RotL", ["TransE", "DistMult", "RotatE", "RotE", "RotL"], "KGE model.")
flags.DEFINE_integer("dim", 32, "Embedding dimension.")
flags.DEFINE_enum("activation", "hanon", ["hanon", "halin", "xexp", "linear2x", "arctanh",
                                          "identity"], "Hardness-aware activation h.")
flags.DEFINE_float("beta", None, "Activation slope; default 3 for hanon, 10 for halin.")
flags.DEFINE_float("gamma", 10.0, "Activation upper bound (hanon, halin).")
flags.DEFINE_float("lam", 0.3, "Alignment weight lambda.")
flags.DEFINE_float("alpha", 0.1, "Query-sampling proportion: k = ceil(alpha * batch_size).")
flags.DEFINE_bool("pos_square", True, "Square the activated positive scores (HaLE).")
flags.DEFINE_bool("rel_scale", True, "Trainable relation scale c_r (False: c_r = 1).")
flags.DEFINE_enum("loss", "hale", ["hale", "samneg", "advneg", "allneg", "nonneg"],
                  "Training strategy (paper §4.1.2); the baselines score with -activation(x), "
                  "so --activation=identity gives their plain form.")
flags.DEFINE_integer("num_negatives", 256, "samneg/advneg: uniform negatives per query.")
flags.DEFINE_float("adv_temperature", 1.0, "advneg: self-adversarial temperature.")
flags.DEFINE_float("margin", 0.0, "samneg/advneg: logit = margin + score.")
flags.DEFINE_enum("bias", "auto", ["auto", "learn", "none"],
                  "Learned entity biases b_h + b_t in the baselines' scores (KGEmb's --bias "
                  "learn): auto = learn for samneg and advneg, none otherwise. With "
                  "--loss=hale, learn adds tail biases b_t (not in the paper; see "
                  "hale_jax.losses).")
flags.DEFINE_float("nonneg_weight", 0.1, "nonneg: weight of the entity-spread regulariser.")
flags.DEFINE_integer("lse_chunk", None, "HaLE: entities per chunk of the log-sum-exp over all "
                     "entities (bounded memory, same result); 0 or >= the entity count: all "
                     "at once. Default: 4096 on CPU, 65536 on GPU (measured fastest).")
flags.DEFINE_integer("batch_size", 1024, "Training queries per step.")
flags.DEFINE_enum("optimizer", "adam", ["adam", "adagrad"], "Optimizer.")
flags.DEFINE_float("learning_rate", 5e-3, "Learning rate.")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine"],
                  "constant (the paper's), or cosine: decay from --learning_rate to 0 over the "
                  "budget (--max_epochs / --max_seconds, whichever ends first).")
flags.DEFINE_float("init_scale", 1e-3, "Std of the Gaussian initialisation of the entity and "
                   "relation tables.")
flags.DEFINE_enum("rotation_init", "uniform", ["uniform", "normal"],
                  "RotatE/RotE/RotL rotation table: U(-1, 1) as KGEmb (Adam turns each plane "
                  "about lr radians a step), or init_scale * N(0, 1) (the first steps turn the "
                  "planes at random; some WN18RR RotL seeds then keep identity rotations).")
flags.DEFINE_integer("seed", 0, "Random seed (initialisation and shuffling).")
flags.DEFINE_float("max_seconds", 30.0, "Training-time budget in seconds (0: none). Compile and "
                   "validation time are not counted.")
flags.DEFINE_integer("max_epochs", 0, "Epoch budget (0: none).")
flags.DEFINE_integer("eval_every", 0, "Validate every this many epochs; 0: about 20 times "
                     "over the budget.")
flags.DEFINE_integer("eval_chunk", 256, "Queries ranked at a time (memory: chunk x entities).")
flags.DEFINE_integer("checkpoint_every_epochs", 0, "Checkpoint every this many epochs (0: by "
                     "seconds only). A checkpoint is also written on SIGTERM/SIGINT and at the end.")
flags.DEFINE_float("checkpoint_every_seconds", 300.0, "Checkpoint when this many wall-clock "
                   "seconds passed since the last one (0: off).")
flags.DEFINE_integer("max_to_keep", 3, "Checkpoints kept in <workdir>/checkpoints.")
flags.DEFINE_string("mesh", "auto", "Device layout: 'auto' (one device, or every GPU on the data "
                    "axis and the entity table row-sharded over a model axis once it would not "
                    "fit), 'none' (one device), or 'data:D,model:M'. A run may resume on another "
                    "mesh.")
flags.DEFINE_enum("matmul", "float32", ["float32", "tf32", "bf16"],
                  "Precision of training's distance matmuls: exact float32, or inputs rounded "
                  "to TF32 / bfloat16 with float32 sums (tensor cores on a GPU). Ranking always "
                  "uses float32.")
flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "Parameter dtype (float64 needs "
                  "JAX_ENABLE_X64=1).")
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0; with "
                    "--num_processes and --process_id, calls jax.distributed.initialize.")
flags.DEFINE_integer("num_processes", None, "Multi-host: the number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index, 0 .. n-1.")
flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() with no "
                  "arguments, so JAX reads the cluster from the environment (SLURM, Open MPI, "
                  "Kubernetes ...).")


def _config():
  from hale_jax.train import Config
  return Config(model=FLAGS.model, dim=FLAGS.dim, activation=FLAGS.activation, beta=FLAGS.beta,
                gamma=FLAGS.gamma, lam=FLAGS.lam, alpha=FLAGS.alpha, pos_square=FLAGS.pos_square,
                rel_scale=FLAGS.rel_scale, loss=FLAGS.loss, num_negatives=FLAGS.num_negatives,
                adv_temperature=FLAGS.adv_temperature, margin=FLAGS.margin, bias=FLAGS.bias,
                nonneg_weight=FLAGS.nonneg_weight, lse_chunk=FLAGS.lse_chunk,
                batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer,
                learning_rate=FLAGS.learning_rate, lr_schedule=FLAGS.lr_schedule,
                init_scale=FLAGS.init_scale, seed=FLAGS.seed,
                max_seconds=FLAGS.max_seconds, max_epochs=FLAGS.max_epochs,
                eval_every=FLAGS.eval_every, eval_chunk=FLAGS.eval_chunk,
                checkpoint_every_epochs=FLAGS.checkpoint_every_epochs,
                checkpoint_every_seconds=FLAGS.checkpoint_every_seconds,
                max_to_keep=FLAGS.max_to_keep, mesh=FLAGS.mesh, dtype=FLAGS.dtype,
                matmul=FLAGS.matmul, rotation_init=FLAGS.rotation_init)


def _data_spec() -> dict[str, str]:
  if FLAGS.data_dir:
    return {"kind": "folder", "path": str(Path(FLAGS.data_dir).resolve())}
  if FLAGS.dataset.lower() == "synthetic":
    return {"kind": "synthetic"}
  if FLAGS.dataset.lower().startswith("powerlaw:"):
    count = FLAGS.dataset.partition(":")[2].replace("_", "")
    if not count.isdigit() or int(count) < 2:
      raise ValueError(f"--dataset={FLAGS.dataset}: expected powerlaw:N with N >= 2 entities, "
                       f"e.g. powerlaw:1000000")
    return {"kind": "powerlaw", "entities": int(count)}
  return {"kind": "dataset", "name": FLAGS.dataset}


def _init_distributed() -> None:
  """``jax.distributed.initialize`` from the flags, before JAX starts its backends."""
  given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if not FLAGS.distributed and all(v is None for v in given):
    return
  import jax
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # keep orbax's INFO lines out of the progress output
  try:
    _init_distributed()
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  import jax
  # Progress lines from process 0 only; errors from every process.
  log = print if jax.process_index() == 0 else (lambda line: None)
  from hale_jax import datasets
  from hale_jax.data import DataError
  from hale_jax.stopping import StopRequest
  from hale_jax.train import Interrupted, train
  stop = StopRequest()
  try:
    config = _config()
    config.validate()
    spec = _data_spec()
    data = datasets.load_data(spec)
    if jax.process_count() > 1 and not FLAGS.workdir:
      raise ValueError("a multi-host run needs --workdir: a folder that every process sees "
                       "(each would otherwise make up its own time-stamped name)")
    workdir = FLAGS.workdir or Path("runs") / (
        f"{data.name}-{config.model}-{config.dim}d-"
        f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    train(config, data, workdir, log=log, overwrite=FLAGS.overwrite, data_spec=spec,
          should_stop=stop,
          extra={"argv": sys.argv, "flags": FLAGS.flags_into_string()})
  except Interrupted as err:
    print(f"stopped: {err}", file=sys.stderr)
    sys.exit(stop.exit_code())
  except (DataError, ValueError, FileExistsError) as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
