"""Training with the HaLE loss: a jit-compiled optax epoch, validation, and a results file.

Library code: it takes a :class:`Config` and never reads flags (``hale_jax.launch`` does).

One epoch is one jit-compiled call: the reciprocal-augmented training set is shuffled on the
device and ``lax.scan`` runs the optax steps, so there is no host round-trip inside an epoch.
Each step takes ``batch_size`` training queries (a triple ``(h, r, t)`` and its reciprocal
``(t, r + |R|, h)`` are separate queries), aligns all of them, and uses the first
``k = ceil(alpha * batch_size)`` of the (shuffled) batch as the sampled queries of the
uniformity term.  The last ``2T mod batch_size`` queries of each epoch's permutation are
dropped, so every step has the same shape; the permutation changes every epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hale_jax import activations, baselines, checkpoints, chunked, losses, models
from hale_jax.data import FilterIndex, KGData, summary, with_reciprocals, write_vocabulary
from hale_jax.evaluation import Evaluator

Array = jax.Array


LOSSES = ("hale", "samneg", "advneg", "allneg", "nonneg")
LR_SCHEDULES = ("constant", "cosine")
BIAS_MODES = ("auto", "learn", "none")
# The losses whose scores may carry learned biases: b_h + b_t, or only b_t for allneg and hale.
BIASED_LOSSES = ("samneg", "advneg", "allneg", "hale")
TAIL_BIAS_LOSSES = ("allneg", "hale")  # rank tails against each other: b_h would cancel


@dataclasses.dataclass
class Config:
  """Everything a training run needs; the launcher fills it from flags."""
  model: str = "RotL"
  dim: int = 32
  activation: str = "hanon"
  beta: float | None = None      # None: the paper's default for the activation
  gamma: float = 10.0
  lam: float = 0.3               # alignment weight lambda
  alpha: float = 0.1             # query-sampling proportion (not RotL's alpha)
  pos_square: bool = True
  rel_scale: bool = True         # trainable c_r; False fixes c_r = 1 (Table 5 "w/o RelRatio")
  loss: str = "hale"             # hale | samneg | advneg | allneg | nonneg (paper §4.1.2)
  num_negatives: int = 256       # samneg, advneg: uniform negatives per query
  adv_temperature: float = 1.0   # advneg
  margin: float = 0.0            # samneg, advneg: logit = margin + score
  bias: str = "auto"             # learned entity biases b_h + b_t in the score (KGEmb's
                                 # "--bias learn"): learn | none | auto = learn for samneg, advneg
  nonneg_weight: float = 0.1     # nonneg: weight of the entity-spread regulariser
  lse_chunk: int | None = None   # hale: entities per chunk of the uniformity LSE; 0 or >= N:
                                 # all at once (see batch_loss); None: default_lse_chunk()
  batch_size: int = 1024
  optimizer: str = "adam"        # adam | adagrad
  learning_rate: float = 5e-3
  lr_schedule: str = "constant"  # constant | cosine: decay to 0 over the budget (learning_rate_at)
  init_scale: float = 1e-3
  rotation_init: str = "uniform"  # uniform: U(-1, 1) as KGEmb | normal: init_scale * N(0, 1)
  seed: int = 0
  max_seconds: float = 30.0      # training-time budget; 0 = none
  max_epochs: int = 0            # 0 = none
  eval_every: int = 0            # epochs between validations; 0 = auto (about 20 per budget)
  eval_chunk: int = 256          # queries ranked at a time
  checkpoint_every_epochs: int = 0       # 0 = only by seconds, on stop and at the end
  checkpoint_every_seconds: float = 300.0  # wall-clock seconds between saves; 0 = off
  max_to_keep: int = 3           # checkpoints kept in workdir/checkpoints
  mesh: str = "auto"             # auto | none | "data:D,model:M" (hale_jax.sharding)
  dtype: str = "float32"         # of the parameters; float64 needs jax_enable_x64
  matmul: str = "float32"        # training's distance matmuls: float32 | tf32 | bf16 (ranking: float32)

  def validate(self) -> None:
    models.canonical_model(self.model)
    activations.get_activation(self.activation)
    losses.num_sampled_queries(self.batch_size, self.alpha)
    if self.loss not in LOSSES:
      raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
    if self.lse_chunk is not None and self.lse_chunk < 0:
      raise ValueError(f"lse_chunk must be >= 0, got {self.lse_chunk}")
    if self.bias not in BIAS_MODES:
      raise ValueError(f"unknown bias {self.bias!r}; choose one of {', '.join(BIAS_MODES)}")
    if self.bias == "learn" and self.loss not in BIASED_LOSSES:
      raise ValueError(f"--bias=learn applies to the losses {', '.join(BIASED_LOSSES)}, not "
                       f"{self.loss!r}; use --bias=none or auto")
    if self.num_negatives <= 0:
      raise ValueError(f"num_negatives must be positive, got {self.num_negatives}")
    models.check_matmul(self.matmul)
    models.check_rotation_init(self.rotation_init)
    if self.dtype not in ("float32", "float64"):
      raise ValueError(f"unknown dtype {self.dtype!r}; choose float32 or float64")
    if self.dtype == "float64" and not jax.config.jax_enable_x64:
      raise ValueError("dtype float64 needs 64-bit JAX: set JAX_ENABLE_X64=1")
    if self.mesh.strip() not in ("auto", "none"):
      from hale_jax import sharding  # pylint: disable=import-outside-toplevel
      sharding.mesh_axis_sizes(self.mesh)  # the syntax; the device count is checked at start
    if self.lr_schedule not in LR_SCHEDULES:
      raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of "
                       f"{', '.join(LR_SCHEDULES)}")
    if self.optimizer not in ("adam", "adagrad"):
      raise ValueError(f"unknown optimizer {self.optimizer!r}; choose adam or adagrad")
    if self.max_seconds <= 0 and self.max_epochs <= 0:
      raise ValueError("set a budget: --max_seconds > 0 or --max_epochs > 0")
    if self.eval_every < 0:
      raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
    for name in ("dim", "batch_size", "eval_chunk", "max_to_keep"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def uses_entity_bias(config: Config) -> bool:
  """Whether the run learns KGEmb's entity biases: ``bias=learn``, or ``auto`` with the
  negative-sampling losses (KGEmb's SamNeg setting: biases learned, margin 0)."""
  if config.bias == "auto":
    return config.loss in ("samneg", "advneg")
  return config.bias == "learn"


def uses_head_bias(config: Config) -> bool:
  """Whether the run also learns the head bias ``b_h``: entity biases with a loss that scores
  a triple by itself (samneg, advneg).  HaLE and allneg compare a query's candidate tails, where
  ``b_h`` is a constant, so their biased runs hold only ``bias_tail`` (runs before 2026-11-28
  also held an unused ``bias_head`` of zeros; :func:`train` resumes their checkpoints)."""
  return uses_entity_bias(config) and config.loss not in TAIL_BIAS_LOSSES


class TrainState(NamedTuple):
  params: dict[str, Array]
  opt_state: Any
  key: Array
  step: Array


def make_optimizer(config: Config) -> optax.GradientTransformation:
  """Adam or Adagrad at ``config.learning_rate``.  With a schedule other than ``constant`` the
  optimiser is wrapped in ``optax.inject_hyperparams``, so the learning rate is a leaf of the
  optimiser state that :func:`set_learning_rate` changes between epochs (the compiled epoch
  stays the same); a constant rate keeps the plain optimiser and its state."""
  base = optax.adagrad if config.optimizer == "adagrad" else optax.adam
  if config.lr_schedule == "constant":
    return base(config.learning_rate)
  return optax.inject_hyperparams(base)(learning_rate=config.learning_rate)


def learning_rate_at(config: Config, epoch: int, train_seconds: float) -> float:
  """The learning rate of the epoch that starts after ``epoch`` epochs and ``train_seconds``.

  ``cosine``: ``lr * (1 + cos(pi * p)) / 2``, with ``p`` the spent fraction of the budget, the
  larger of ``epoch / max_epochs`` and ``train_seconds / max_seconds`` over the budgets that are
  set (clipped to 1).  A time budget's fraction is measured when the epoch starts, so the rate
  falls to about ``lr * (pi * epoch_seconds / max_seconds)^2 / 4`` at the end, not to 0.  The
  schedule depends only on these two numbers, which checkpoints keep, so a resumed run
  continues on the same curve.  The paper trains at a constant rate; the schedule is this
  project's option (``benchmarks/RESULTS.md`` measures it).
  """
  if config.lr_schedule == "constant":
    return config.learning_rate
  spent = []
  if config.max_epochs:
    spent.append(epoch / config.max_epochs)
  if config.max_seconds:
    spent.append(train_seconds / config.max_seconds)
  p = min(1.0, max(spent, default=0.0))
  return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * p))


def set_learning_rate(state: "TrainState", learning_rate: float) -> "TrainState":
  """``state`` with the learning rate of an ``inject_hyperparams`` optimiser state replaced (same
  dtype and sharding); a plain optimiser state is returned unchanged."""
  opt_state = state.opt_state
  # Duck-typed: optax names the state class differently across versions
  # (InjectStatefulHyperparamsState in 0.2.8, which is not an InjectHyperparamsState).
  if "learning_rate" not in getattr(opt_state, "hyperparams", {}):
    return state
  old = opt_state.hyperparams["learning_rate"]
  new = jax.device_put(np.asarray(learning_rate, old.dtype), old.sharding)
  hyperparams = {**opt_state.hyperparams, "learning_rate": new}
  return state._replace(opt_state=opt_state._replace(hyperparams=hyperparams))


def batch_loss(params, batch: Array, key: Array | None = None, *, model: str,
               activation: Callable, lam: float, num_sampled: int, pos_square: bool = True,
               loss: str = "hale", rel_scale: bool = True, num_negatives: int = 256,
               adv_temperature: float = 1.0, margin: float = 0.0,
               nonneg_weight: float = 0.1, lse_chunk: int = 0, matmul: str = "float32") -> Array:
  """Training loss of ``batch [B, 3]`` (head, relation id incl. reciprocals, tail).

  ``hale``: the first ``num_sampled`` rows are the sampled queries of the uniformity term.
  The baselines (``hale_jax.baselines``) score triples with ``-h(x)``, ``x`` the scaled
  squared distance, so ``--activation=identity`` gives the plain strategies of §4.1.2 and any
  other activation their "HA +" variants (Table 5).  ``samneg``/``advneg`` draw
  ``num_negatives`` uniform tail entities per query from ``key`` (tails only: head corruption
  is the tail corruption of the reciprocal query, which every epoch also trains; KGEmb's
  ``--double_neg`` instead replaces head and tail of one negative together).  When ``params`` hold entity
  biases (``models.init_params(entity_bias=True)``) the baselines' scores are KGEmb's
  ``b_h + b_t - h(x)``, and HaLE's candidate scores are ``b_t - h(x)`` (``hale_jax.losses``,
  "Tail biases"); HaLE and allneg rank a query's tails against each other, so they never read
  ``bias_head`` and their runs have none (:func:`uses_head_bias`).  ``lse_chunk > 0`` computes
  HaLE's uniformity term ``lse_chunk`` entities at a time (``hale_jax.chunked``: the same value
  and gradient in ``O(k * lse_chunk)`` memory); 0, or a chunk of ``N`` or more, materialises
  the ``[k, N]`` matrix (one chunk would only add the loop, which on a GPU makes the step
  host-bound; see :func:`default_lse_chunk`).
  ``matmul`` sets the precision of the ``[k, N]`` / ``[B, N]`` distance matmuls
  (``models.MATMUL_MODES``: exact float32, or TF32 / bfloat16 inputs with float32 sums).
  """
  heads, rels, tails = batch[:, 0], batch[:, 1], batch[:, 2]
  entity = params["entity"]
  queries = models.transform(model, params, heads, rels)
  scale = (models.relation_scale(params, rels) if rel_scale
           else jnp.ones(rels.shape, queries.dtype))
  pos = scale * models.pair_squared_distances(queries, entity[tails])
  biased = models.has_entity_bias(params)
  # b_t of the positives and b of every entity (HaLE: losses module docstring, "Tail biases").
  pos_bias, entity_bias = ((params["bias_tail"][tails], params["bias_tail"]) if biased
                           else (None, None))
  if loss == "hale" and 0 < lse_chunk < entity.shape[0]:
    return chunked.hale_loss_chunked(pos, queries[:num_sampled], scale[:num_sampled], entity,
                                     activation, lam, lse_chunk, pos_square, matmul,
                                     pos_bias, entity_bias)
  if loss == "hale":
    sampled = scale[:num_sampled, None] * models.squared_distances(queries[:num_sampled], entity,
                                                                      matmul)
    return losses.hale_loss(pos, sampled, activation, lam, pos_square, pos_bias, entity_bias)
  if loss == "allneg":
    scores = baselines.scores_from_scaled(
        scale[:, None] * models.squared_distances(queries, entity, matmul), activation)
    if biased:  # b_h is the same for every candidate: softmax ignores it
      scores = scores + params["bias_tail"][None, :]
    return baselines.allneg_loss(scores, tails)
  pos_score = baselines.scores_from_scaled(pos, activation)
  if biased:  # KGEmb: score = b_h + b_t - h(x)
    head_bias = params["bias_head"][heads]
    pos_score = pos_score + head_bias + pos_bias
  if loss in ("samneg", "advneg"):
    negs = jax.random.randint(key, (batch.shape[0], num_negatives), 0, entity.shape[0])
    neg = models.pair_squared_distances(queries[:, None, :], entity[negs])  # [B, m]
    neg_score = baselines.scores_from_scaled(scale[:, None] * neg, activation)
    if biased:
      neg_score = neg_score + head_bias[:, None] + params["bias_tail"][negs]
    if loss == "samneg":
      return baselines.samneg_loss(pos_score, neg_score, margin)
    return baselines.advneg_loss(pos_score, neg_score, adv_temperature, margin)
  if loss == "nonneg":
    return baselines.nonneg_loss(pos_score, entity, nonneg_weight)
  raise ValueError(f"unknown loss {loss!r}")


def default_lse_chunk(backend: str | None = None) -> int:
  """The uniformity LSE's chunk when ``Config.lse_chunk`` is None, for ``backend`` (default:
  JAX's default backend): 4096 on CPU, 65536 on GPU and TPU.

  Measured (``benchmarks/RESULTS.md``): on the 2-core CPU, chunks of 4096 halve the WN18RR step
  against the plain ``[k, N]`` form (41 ms against 95 ms at batch 1024; presumably because the
  blocks stay in cache). On an H100 they make it 1.7x slower (0.65 ms against 0.38 ms):
  XLA:GPU runs a loop's control on the host (JAX issue #2491), so the chunk loop made the
  training step host-bound (356 us of host time per WN18RR step, against 3.6 us for the plain
  FB15k-237 step). 65536 keeps WN18RR, FB15k-237 and CoDEx plain (one chunk is the plain path,
  see :func:`batch_loss`) and bounds a 1M-entity step's ``[k, chunk]`` blocks (27 MB at
  k = 103).
  """
  return 4096 if (backend or jax.default_backend()) == "cpu" else 65536


def effective_lse_chunk(config: Config) -> int:
  """``config.lse_chunk``, or :func:`default_lse_chunk` where it is None."""
  return default_lse_chunk() if config.lse_chunk is None else config.lse_chunk


def _lse_form(config: Config, num_entities: int, mesh) -> str:
  """How the uniformity LSE is computed, for the start line: the mesh path is always plain
  (``hale_jax.sharding.make_loss_fn``), and so is a chunk of 0 or of ``N`` or more."""
  chunk = effective_lse_chunk(config)
  return f"chunks of {chunk}" if mesh is None and 0 < chunk < num_entities else "plain"


def loss_kwargs(config: Config) -> dict[str, Any]:
  """The keyword arguments of :func:`batch_loss` that ``config`` sets."""
  return dict(
      model=models.canonical_model(config.model),
      activation=activations.get_activation(config.activation, config.beta, config.gamma),
      lam=config.lam, num_sampled=losses.num_sampled_queries(config.batch_size, config.alpha),
      pos_square=config.pos_square, loss=config.loss, rel_scale=config.rel_scale,
      num_negatives=config.num_negatives, adv_temperature=config.adv_temperature,
      margin=config.margin, nonneg_weight=config.nonneg_weight,
      lse_chunk=effective_lse_chunk(config), matmul=config.matmul)


def epoch_body(config: Config, num_queries: int, loss_fn: Callable | None = None,
               constrain: Callable[[Any, Any], tuple[Any, Any]] | None = None):
  """The un-jitted epoch ``(state, train [2T, 3]) -> (state, mean_loss)`` and its step count.

  ``loss_fn(params, batch, key)`` defaults to :func:`batch_loss` with ``config``'s settings.
  ``constrain(batch, (params, opt_state))`` may return them with sharding constraints
  (``hale_jax.sharding``); by default nothing is constrained.
  """
  optimizer = make_optimizer(config)
  steps = num_queries // config.batch_size
  if steps == 0:
    raise ValueError(f"batch_size {config.batch_size} exceeds the {num_queries} training queries")
  grad_fn = jax.value_and_grad(loss_fn or functools.partial(batch_loss, **loss_kwargs(config)))
  constrain = constrain or (lambda batch, carry: (batch, carry))

  def epoch(state: TrainState, train: Array) -> tuple[TrainState, Array]:
    key, perm_key, step_key = jax.random.split(state.key, 3)
    order = jax.random.permutation(perm_key, num_queries)[:steps * config.batch_size]
    order = order.reshape(steps, config.batch_size)
    step_keys = jax.random.split(step_key, steps)

    def step(carry, xs):
      params, opt_state = carry
      idx, k = xs
      batch, _ = constrain(train[idx], None)
      loss, grads = grad_fn(params, batch, k)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      _, carry = constrain(None, (optax.apply_updates(params, updates), opt_state))
      return carry, loss

    (params, opt_state), step_losses = jax.lax.scan(step, (state.params, state.opt_state),
                                                    (order, step_keys))
    return TrainState(params, opt_state, key, state.step + steps), jnp.mean(step_losses)

  return epoch, steps


def make_epoch_fn(config: Config, num_queries: int):
  """Returns ``epoch(state, train [2T, 3]) -> (state, mean_loss)``, jitted, state donated."""
  epoch, steps = epoch_body(config, num_queries)
  return jax.jit(epoch, donate_argnums=0), steps


def init_fn(config: Config, num_entities: int, num_relation_ids: int,
            pad_to: Callable[[dict[str, Array]], dict[str, Array]] | None = None,
            head_bias: bool | None = None) -> Callable[[], TrainState]:
  """The function that creates the initial state (to be jitted): parameters from
  ``config.seed``, optionally padded by ``pad_to`` (``hale_jax.sharding``), and the optimiser
  state.  One function for every layout, so each starts from the same bits.  ``head_bias``
  overrides :func:`uses_head_bias` (True gives the layout of older tail-bias checkpoints)."""
  optimizer = make_optimizer(config)

  def init() -> TrainState:
    key = jax.random.PRNGKey(config.seed)
    key, init_key = jax.random.split(key)
    params = models.init_params(init_key, config.model, num_entities, num_relation_ids,
                                config.dim, config.init_scale, config.dtype,
                                entity_bias=uses_entity_bias(config),
                                head_bias=(uses_head_bias(config) if head_bias is None
                                           else head_bias),
                                rotation_init=config.rotation_init)
    if pad_to is not None:
      params = pad_to(params)
    return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

  return init


def init_state(config: Config, data: KGData) -> TrainState:
  return jax.jit(init_fn(config, data.num_entities, 2 * data.num_relations))()


def _versions() -> dict[str, str]:
  import flax
  import jaxlib
  from hale_jax import __version__
  return {"python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "optax": optax.__version__, "flax": flax.__version__,
          "numpy": np.__version__, "hale_jax": __version__}


@functools.lru_cache(maxsize=None)
def _git_commit() -> str | None:
  """The source checkout's commit, with ``-dirty`` if it has uncommitted changes.

  Taken once per process, at its first :func:`train`: Python does not reload modules changed
  on disk later, so a long-lived process (``benchmarks/reproduce.py``) keeps training the code it
  loaded and each of its runs records that code's commit, not the checkout's at the time."""
  here = Path(__file__).resolve().parent
  try:
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                          text=True, cwd=here, timeout=5).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=here, timeout=5).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return (head + ("-dirty" if dirty else "")) if head else None


def _device() -> dict[str, Any]:
  devs = jax.devices()
  return {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs)}


def _layout(mesh) -> dict[str, Any]:
  """How a run is spread: the mesh (None: one device) and the process count."""
  return {"mesh": None if mesh is None else
          f"data:{mesh.shape['data']},model:{mesh.shape['model']}",
          "processes": jax.process_count()}


def _fmt_metrics(m: dict[str, float]) -> str:
  return (f"MRR {m['mrr']:.4f}  MR {m['mr']:.1f}  H@1 {m['hits@1']:.4f}  "
          f"H@3 {m['hits@3']:.4f}  H@10 {m['hits@10']:.4f}")


class Interrupted(Exception):
  """Training stopped early on request (a signal); the state was checkpointed first."""


def start_run(workdir: str | os.PathLike, spec: dict[str, Any], overwrite: bool = False,
              write: bool = True) -> dict[str, Any] | None:
  """Prepares ``workdir`` for the run ``spec``; returns earlier results if it already finished.

  A workdir holding a different run (model, dimension, dataset vocabulary, any other
  non-budget setting) is refused unless ``overwrite``, which deletes the earlier outputs.
  The same run is resumed from its latest checkpoint by :func:`train`.  ``write=False`` (the
  other processes of a multi-host run) only checks; process 0 clears and writes.
  """
  workdir = Path(workdir)
  if overwrite and not write:
    return None
  if overwrite:
    checkpoints.clear_outputs(workdir)
  old = checkpoints.read_run(workdir)
  results = workdir / "results.json"
  if old is None and results.exists():
    raise FileExistsError(f"{workdir}: holds results.json of an earlier run; choose another "
                          f"--workdir or pass --overwrite to replace it")
  if old is not None:
    diffs = checkpoints.mismatch(old, spec)
    if diffs:
      raise FileExistsError(f"{workdir}: holds a different run ({'; '.join(diffs)}); choose "
                            f"another --workdir or pass --overwrite to replace it")
    if results.exists():
      return json.loads(results.read_text())
  if write:
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints.write_run(workdir, spec)
  return None


def _agree(values: list[float]) -> np.ndarray:
  """``values`` of every process, ``[processes, len(values)]``: the per-epoch decisions (time
  spent, stop requested, checkpoint due) must be the same everywhere, or a multi-host run would
  deadlock in its next collective.  One small all-gather; a no-op for one process."""
  local = np.asarray(values, np.float64)[None]
  if jax.process_count() == 1:
    return local
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(local[0]))


def _validate_now(config: Config, epoch: int, train_seconds: float, since_eval: float) -> bool:
  """Every ``eval_every`` epochs; in auto mode about 20 times per budget; always at the end."""
  if config.max_epochs and epoch >= config.max_epochs:
    return True
  if config.eval_every:
    return epoch % config.eval_every == 0
  if config.max_seconds:
    return since_eval >= config.max_seconds / 20 or train_seconds >= config.max_seconds
  return epoch % max(1, config.max_epochs // 20) == 0


def _older_layouts(config: Config, num_entities: int, num_relation_ids: int) -> list[dict]:
  """Restore templates of the earlier layouts a run of ``config`` may have checkpointed: HaLE
  and allneg runs with entity biases held an unused ``bias_head`` table before 2026-11-28."""
  if not uses_entity_bias(config) or uses_head_bias(config):
    return []
  old = jax.eval_shape(init_fn(config, num_entities, num_relation_ids, head_bias=True))
  return [{"state": old, "best_params": old.params}]


def _without_key(tree: Any, key: str) -> Any:
  """``tree`` (dicts, lists, tuples and NamedTuples such as optax states) without any dict
  entry named ``key``: a parameter table dropped from the parameters and its optimiser moments."""
  if isinstance(tree, dict):
    return {k: _without_key(v, key) for k, v in tree.items() if k != key}
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return type(tree)(*(_without_key(v, key) for v in tree))
  if isinstance(tree, (list, tuple)):
    return type(tree)(_without_key(v, key) for v in tree)
  return tree


def train(config: Config, data: KGData, workdir: str | os.PathLike,
          log: Callable[[str], None] = print, overwrite: bool = False,
          extra: dict[str, Any] | None = None, data_spec: dict[str, Any] | None = None,
          should_stop: Callable[[], str | None] | None = None,
          devices: list[jax.Device] | None = None) -> dict[str, Any]:
  """Trains, validates, tests the best-valid parameters, and writes ``workdir/results.json``.

  Resumes from the latest checkpoint in ``workdir`` when it holds the same run, and returns
  the stored results when that run already finished.  ``data_spec`` says how to reload
  ``data`` (see ``datasets.load_data``) and is kept in ``run.json``.  ``should_stop`` is polled
  after every epoch; when it returns a reason, the state is checkpointed and
  :class:`Interrupted` is raised.  ``extra`` is stored under ``"run"`` in the results.

  ``config.mesh`` picks the layout (``hale_jax.sharding.resolve_mesh``, over ``devices``,
  default all): one device, or a ``("data", "model")`` mesh with the entity table row-sharded.
  Checkpoints hold the table of the mesh that saved them; a resume cuts it to the real rows
  and lays it out for the current mesh, so a run may continue on another mesh or device count.
  In a multi-host run (``jax.distributed``) every process calls this; process 0 writes the
  JSON, vocabulary and npz files, orbax writes the checkpoints from all.

  Returns:
    The results dict (also written as JSON).
  """
  from hale_jax import sharding  # pylint: disable=import-outside-toplevel  # it imports train
  config.validate()
  # Before the workdir is touched: a mesh the devices cannot form is a clear error, not a
  # half-written run folder.
  mesh = sharding.resolve_mesh(config, data.num_entities, devices)
  wall0 = time.perf_counter()
  commit = _git_commit()  # the process's first: later edits on disk are not what runs
  lead = jax.process_index() == 0
  spec = {"config": dataclasses.asdict(config), "data": data_spec or {"kind": "unknown"},
          "dataset": data.name, "vocab_sha256": checkpoints.vocabulary_hash(data)}
  finished = start_run(workdir, spec, overwrite, write=lead)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("hale_jax.train: run folder ready")
  workdir = Path(workdir)
  if finished is not None:
    log(f"{workdir}: this run already finished; its results are in {workdir / 'results.json'} "
        f"(pass --overwrite to train again)")
    return finished
  if lead:
    write_vocabulary(data, workdir)
  log(summary(data))
  k = losses.num_sampled_queries(config.batch_size, config.alpha)
  log(f"model {config.model} d={config.dim}  loss {config.loss}  activation {config.activation}"
      f"  lambda {config.lam}  alpha {config.alpha} (k={k} sampled queries/step)  "
      f"batch {config.batch_size}  "
      f"{config.optimizer} lr {config.learning_rate}"
      + (f" ({config.lr_schedule})" if config.lr_schedule != "constant" else "")
      + f"  seed {config.seed}"
      + ("  entity biases" if uses_entity_bias(config) else "")
      + (f"  lse {_lse_form(config, data.num_entities, mesh)}" if config.loss == "hale" else "")
      + (f"  matmul {config.matmul}" if config.matmul != "float32" else "")
      + (f"  rotation init {config.rotation_init}"
         if models.canonical_model(config.model) in models.ROTATION_MODELS else ""))
  layout = _layout(mesh)
  log(f"device {_device()}  layout {layout['mesh'] or 'one device'}  workdir {workdir}")

  n = data.num_entities
  optimizer = make_optimizer(config)
  train_host = with_reciprocals(data.train, data.num_relations).astype(np.int32)
  if mesh is None:
    train_queries = jnp.asarray(train_host)
    epoch_fn, steps = make_epoch_fn(config, train_host.shape[0])
    state = init_state(config, data)
  else:
    train_queries = sharding.place_training_set(mesh, train_host)
    epoch_fn, steps = sharding.make_sharded_epoch_fn(config, train_host.shape[0], mesh,
                                                     num_entities=n)
    state = sharding.init_sharded_state(config, data, mesh)
  index = FilterIndex(data)
  ranking_activation = activations.get_activation(config.activation, config.beta, config.gamma)
  valid_eval = Evaluator(data, "valid", config.model, config.eval_chunk, index, mesh,
                         ranking_activation)
  test_eval = Evaluator(data, "test", config.model, config.eval_chunk, index, mesh,
                        ranking_activation)

  t0 = time.perf_counter()
  compiled_epoch = epoch_fn.lower(state, train_queries).compile()
  compile_seconds = time.perf_counter() - t0
  compile_seconds += valid_eval.compile(state.params) + test_eval.compile(state.params)
  log(f"compiled in {compile_seconds:.1f}s; {steps} steps of {config.batch_size} per epoch")

  # Everything but arrays that a resume needs; stored as the checkpoint's JSON metadata.
  progress = {"epoch": 0, "train_seconds": 0.0, "eval_seconds": 0.0, "last_eval_at": 0.0,
              "loss": None, "best": None, "best_epoch": 0, "curve": []}
  best_params = jax.tree.map(jnp.copy, state.params)  # own buffers: the state's are donated
  ckpt = checkpoints.Checkpointer(workdir, config.max_to_keep, log)
  restored = ckpt.restore_latest({"state": state, "best_params": best_params},
                                 *_older_layouts(config, n, 2 * data.num_relations))
  if restored is not None:  # host arrays, padded for the mesh that saved them
    arrays, meta, _ = restored
    if "bias_head" in arrays["best_params"] and not uses_head_bias(config):
      arrays = _without_key(arrays, "bias_head")  # an older layout: its b_h was never used
      log("the checkpoint holds an unused bias_head table (saved before 2026-11-28): dropped")
    progress = {k: meta[k] for k in progress}
    state = sharding.place_state(sharding.unpad_state(arrays["state"], optimizer, n), mesh,
                                 optimizer)
    best_params = sharding.place_params(
        {k: v[:n] if k == "entity" else v for k, v in arrays["best_params"].items()}, mesh)
    log(f"resumed from {workdir / 'checkpoints' / str(progress['epoch'])}: epoch "
        f"{progress['epoch']}, {progress['train_seconds']:.1f}s of training already spent")

  vocabulary = checkpoints.vocabulary_meta(data, spec["vocab_sha256"])

  def save() -> None:  # self-contained: the run's config and vocabularies go along
    ckpt.save(progress["epoch"], {"state": state, "best_params": best_params},
              {**progress, "config": spec["config"], "data": spec["data"], **vocabulary,
               "layout": layout})

  def validate(rate: float) -> None:
    nonlocal best_params
    t0 = time.perf_counter()
    m = valid_eval(state.params)["realistic"]
    progress["eval_seconds"] += time.perf_counter() - t0
    progress["curve"].append({"epoch": progress["epoch"],
                              "train_seconds": round(progress["train_seconds"], 3),
                              "loss": progress["loss"], "valid_mrr": m["mrr"],
                              "valid_hits@10": m["hits@10"],
                              "learning_rate": last_learning_rate})
    if progress["best"] is None or m["mrr"] > progress["best"]["mrr"]:
      progress["best"], progress["best_epoch"] = m, progress["epoch"]
      best_params = jax.tree.map(jnp.copy, state.params)
      ckpt.save_best(progress["epoch"], best_params)
    log(f"epoch {progress['epoch']:4d} | loss {progress['loss']:.4f} | {rate:,.0f} triples/s | "
        f"valid MRR {m['mrr']:.4f} H@10 {m['hits@10']:.4f} | train "
        f"{progress['train_seconds']:.1f}s eval {progress['eval_seconds']:.1f}s")

  last_epoch_seconds = 0.0
  last_learning_rate = None  # of the last epoch this process trained (the curve records it)
  host_seconds, epochs_here = 0.0, 0  # dispatch time of the epoch calls of this process
  last_save = time.perf_counter()
  while True:
    epoch, spent = progress["epoch"], progress["train_seconds"]
    if config.max_epochs and epoch >= config.max_epochs:
      stop = f"max_epochs {config.max_epochs} reached"
      break
    if config.max_seconds and epoch and spent + last_epoch_seconds > config.max_seconds:
      stop = f"training budget {config.max_seconds:g}s reached"
      break
    last_learning_rate = learning_rate_at(config, epoch, spent)
    state = set_learning_rate(state, last_learning_rate)
    t0 = time.perf_counter()
    state, loss = compiled_epoch(state, train_queries)
    host_seconds += time.perf_counter() - t0  # the host's share: dispatch of the one call
    epochs_here += 1
    loss = float(sharding.to_host(loss))  # waits for the epoch
    last_epoch_seconds = time.perf_counter() - t0
    reason = should_stop() if should_stop else None
    due = bool(config.checkpoint_every_seconds and
               time.perf_counter() - last_save >= config.checkpoint_every_seconds)
    agreed = _agree([last_epoch_seconds, reason is not None, due])
    last_epoch_seconds, due = float(agreed[0, 0]), bool(agreed[0, 2])  # process 0's clock
    if reason is None and agreed[:, 1].any():
      reason = "stop requested on another process"
    progress.update(epoch=epoch + 1, train_seconds=spent + last_epoch_seconds, loss=loss)
    if not math.isfinite(loss):
      log(f"epoch {epoch + 1}: loss is {loss}; stopping (lower --learning_rate or check the data)")
      stop = "non-finite loss"
      break
    if _validate_now(config, progress["epoch"], progress["train_seconds"],
                     since_eval=progress["train_seconds"] - progress["last_eval_at"]):
      progress["last_eval_at"] = progress["train_seconds"]
      validate(steps * config.batch_size / last_epoch_seconds)
    every_epochs = config.checkpoint_every_epochs
    if reason or due or (every_epochs and progress["epoch"] % every_epochs == 0):
      save()
      last_save = time.perf_counter()
    if reason:
      ckpt.close()
      raise Interrupted(f"{reason}: checkpoint saved at epoch {progress['epoch']} in "
                        f"{workdir / 'checkpoints'}; rerun the same command to resume")
  curve = progress["curve"]
  if not curve or curve[-1]["epoch"] != progress["epoch"]:  # the last epochs were not validated
    validate(steps * config.batch_size / max(last_epoch_seconds, 1e-9))
  save()
  ckpt.close()
  log(f"stopped after {progress['epoch']} epochs: {stop}")

  t0 = time.perf_counter()
  valid_metrics = valid_eval(best_params)
  test_metrics = test_eval(best_params)
  progress["eval_seconds"] += time.perf_counter() - t0
  best_host = sharding.unpad_params(best_params, n)  # every process takes part in the gather
  if lead:
    np.savez(workdir / "best_params.npz", **best_host)
  log(f"best valid epoch {progress['best_epoch']}: {_fmt_metrics(valid_metrics['realistic'])}")
  for mode in ("realistic", "pessimistic"):
    log(f"test ({mode} ties): {_fmt_metrics(test_metrics[mode])}")

  results = {
      "config": dataclasses.asdict(config),
      "dataset": {"name": data.name, "source": data.source, "entities": data.num_entities,
                  "relations": data.num_relations, "train": len(data.train),
                  "valid": len(data.valid), "test": len(data.test)},
      "metrics": {"valid": valid_metrics, "test": test_metrics,
                  "best_epoch": progress["best_epoch"], "epochs": progress["epoch"],
                  "steps": int(sharding.to_host(state.step)), "stop_reason": stop,
                  "ranking": "filtered (train+valid+test), both directions; headline = "
                             "realistic ties (mean of optimistic and pessimistic)"},
      "curve": curve,
      "timings": {"compile_seconds": compile_seconds,
                  "train_seconds": progress["train_seconds"],
                  "eval_seconds": progress["eval_seconds"],
                  "seconds_per_epoch": progress["train_seconds"] / max(progress["epoch"], 1),
                  # Host time per step: the epoch is one jitted call, so the host only
                  # dispatches it; the rest of the epoch runs on the device without the host.
                  "host_seconds_per_step": host_seconds / max(epochs_here * steps, 1),
                  "total_seconds_this_process": time.perf_counter() - wall0,
                  "resumed": restored is not None},
      "versions": _versions(),
      "device": _device(),
      "layout": layout,
      "git_commit": commit,
      "run": extra or {},
  }
  if lead:
    checkpoints.write_json(workdir / "results.json", results)
    log(f"results written to {workdir / 'results.json'}")
  return results
