"""The settings of a training run: one frozen config tree, each option defined once.

A :class:`Config` holds five groups, each a frozen dataclass:

==============  =========================================================================
group           what it decides
==============  =========================================================================
``model``       the embedding: model, dimension, initialisation, dtype
``objective``   the training loss: HaLE or a baseline, its activation and weights
``optim``       the optimiser, learning rate and schedule, batch size, seed
``budget``      when training stops and how often it validates
``run``         checkpoints and the device layout
==============  =========================================================================

Every field is declared with :func:`option`, which records its help text, its allowed values
(taken from the registries of the modules that implement them) and whether a resumed run may
change it (``resumable``).  The command line (:mod:`hale_jax.options`) defines one absl flag per
field from these declarations, so adding a field adds its flag.  Field names are unique across
groups, so a config also has a flat view (:meth:`Config.flat`, :meth:`Config.make`) that
``run.json`` and ``results.json`` store.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

import jax

from hale_jax import activations, distances, losses, mesh, models, objective, optim

GROUPS = ("model", "objective", "optim", "budget", "run")
EVAL_PROTOCOLS = ("filtered", "ogb")
"""``--eval_protocol``: ``hale_jax.ranking`` (filtered) or ``hale_jax.ogb_eval`` (ogb)."""


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None,  # pylint: disable=redefined-builtin
           resumable: bool = False, registry: str | None = None) -> Any:
  """A config field: its default, a one-line ``help`` for the flag, the allowed values, and
  whether a resumed run may change it (a budget may grow; the loss may not).  ``registry``
  names the tuple ``choices`` comes from when that one grows as models, losses or activations
  are added: ``docs/flags.md`` then names it instead of listing it, so it stays current."""
  return dataclasses.field(default=default, metadata={"help": help, "choices": choices,
                                                      "resumable": resumable,
                                                      "registry": registry})


def _check_choice(group: Any, name: str) -> None:
  allowed = group.__dataclass_fields__[name].metadata["choices"]
  value = getattr(group, name)
  if allowed is not None and value not in allowed:
    raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


def _check_positive(group: Any, *names: str) -> None:
  for name in names:
    if getattr(group, name) <= 0:
      raise ValueError(f"{name} must be positive, got {getattr(group, name)}")


def _check_choices(group: Any) -> None:
  for f in dataclasses.fields(group):
    _check_choice(group, f.name)


def _check_finite(group: Any) -> None:
  """Every float field is a finite number (NaN passes every comparison check unnoticed)."""
  for f in dataclasses.fields(group):
    value = getattr(group, f.name)
    if isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"--{f.name} must be a finite number, got {value}")


def _check_not_negative(group: Any, *names: str) -> None:
  for name in names:
    if getattr(group, name) < 0:
      raise ValueError(f"--{name} must be >= 0, got {getattr(group, name)}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The embedding model and its initialisation."""
  model: str = option("RotL", "KGE model: the paper's five, or the hyperbolic RotH, RefH, "
                      "AttH (Chami et al. 2020; Poincaré distance, a curvature per relation).",
                      choices=models.MODEL_NAMES, registry="hale_jax.models.MODEL_NAMES")
  dim: int = option(32, "Embedding dimension (even for the models with Givens rotations or "
                    "reflections).")
  init_scale: float = option(1e-3, "Std of the Gaussian initialisation of the entity and "
                             "relation tables.")
  rotation_init: str = option("uniform", "Givens tables (rotation, reflection) of the "
                              "RotatE/RotE/RotL/RotH/RefH/AttH models: U(-1, 1) as "
                              "KGEmb, or init_scale * N(0, 1).", choices=models.ROTATION_INITS)
  dtype: str = option("float32", "Parameter dtype (float64 needs JAX_ENABLE_X64=1).",
                      choices=("float32", "float64"))

  def __post_init__(self):
    _check_finite(self)
    models.canonical_model(self.model)  # any case, so not a plain choice
    for name in ("rotation_init", "dtype"):
      _check_choice(self, name)
    _check_positive(self, "dim")
    if self.model.lower() in models.ROTATION_MODELS and self.dim % 2:
      raise ValueError(f"{self.model} rotates or reflects 2-d planes, so dim must be even, "
                       f"got {self.dim}")
    if self.dtype == "float64" and not jax.config.jax_enable_x64:
      raise ValueError("dtype float64 needs 64-bit JAX: set JAX_ENABLE_X64=1")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """The training loss (paper Eq. 9, or a baseline of §4.1.2) and its hyperparameters."""
  loss: str = option("hale", "Training strategy (paper §4.1.2). The baselines score with "
                     "-activation(x), so --activation=identity gives their plain form.",
                     choices=objective.LOSSES, registry="hale_jax.objective.LOSSES")
  activation: str = option(activations.DEFAULT_ACTIVATION, "Hardness-aware activation h "
                           "(arctanh: the earlier name of two_arctanh).",
                           choices=activations.CHOICES,
                           registry="hale_jax.activations.CHOICES")
  beta: float | None = option(None, "Activation slope; default 3 for hanon, 10 for halin.")
  gamma: float = option(10.0, "Activation upper bound (hanon, halin).")
  lam: float = option(0.3, "Alignment weight lambda.")
  alpha: float = option(0.1, "Query-sampling proportion: k = ceil(alpha * batch_size) "
                        "sampled queries per step.")
  pos_square: bool = option(True, "Square the activated positive scores (HaLE); false is "
                            "Table 5's w/o PosSquare.")
  rel_scale: bool = option(True, "Trainable relation scale c_r (false: c_r = 1).")
  num_negatives: int = option(256, "samneg/advneg: uniform negatives per query.")
  adv_temperature: float = option(1.0, "advneg: self-adversarial temperature.")
  margin: float = option(0.0, "samneg/advneg: logit = margin + score.")
  bias: str = option("auto", "Learned entity biases in the score: auto = learn for samneg and "
                     "advneg (KGEmb's b_h + b_t), none otherwise; learn with hale or allneg "
                     "adds tail biases b_t.", choices=objective.BIAS_MODES)
  nonneg_weight: float = option(0.1, "nonneg: weight of the entity-spread regulariser.")
  lse_chunk: int | None = option(None, "hale: entities per chunk of the uniformity "
                                 "log-sum-exp (same value, bounded memory); 0: all at once. "
                                 "Default: 4096 on CPU, 65536 on GPU.", resumable=True)
  lse_keep_mib: int = option(64, "hale, LSE in chunks: keep the [k, N] inner products of "
                             "the forward pass for the backward pass (which then skips their "
                             "matmul) when they take at most this many MiB; 0: never. The "
                             "same numbers up to float32 rounding.", resumable=True)
  lse: str = option("auto", "How HaLE's uniformity log-sum-exp over all entities is computed: "
                    "auto (the [k, N] block, or --lse_chunk chunks), or fused (one Pallas "
                    "kernel on a GPU; elsewhere chunks).", choices=objective.LSE_FORMS,
                    resumable=True)
  regularizer: str = option("none", "Weight penalty on the entity rows of each batch's heads "
                            "and tails: n3 (sum |e|^3, Lacroix et al. 2018) or l2 (sum e^2), "
                            "times --reg_weight, averaged over the batch.",
                            choices=objective.REGULARIZERS)
  reg_weight: float = option(0.0, "Weight of --regularizer.")
  query_dropout: float = option(0.0, "Training only: dropout on the transformed heads "
                                "Phi(e_h, r) with this rate, rescaled by 1 / (1 - rate) "
                                "(Euclidean models).")
  matmul: str = option("float32", "Precision of training's distance matmuls: float32, or "
                       "inputs rounded to tf32 / bf16 with float32 sums. Ranking always uses "
                       "float32.", choices=distances.MATMUL_MODES)

  def __post_init__(self):
    _check_finite(self)
    _check_choices(self)
    _check_positive(self, "num_negatives")
    if not 0.0 < self.alpha <= 1.0:
      raise ValueError(f"the sampling proportion alpha must lie in (0, 1], got {self.alpha}")
    _check_not_negative(self, "reg_weight")
    if not 0.0 <= self.query_dropout < 1.0:
      raise ValueError(f"--query_dropout must lie in [0, 1), got {self.query_dropout}")
    if self.lse_chunk is not None and self.lse_chunk < 0:
      raise ValueError(f"lse_chunk must be >= 0, got {self.lse_chunk}")
    _check_not_negative(self, "lse_keep_mib")
    if self.bias == "learn" and self.loss not in objective.BIASED_LOSSES:
      raise ValueError(f"--bias=learn applies to the losses {', '.join(objective.BIASED_LOSSES)}"
                       f", not {self.loss!r}; use --bias=none or auto")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """The optimiser, its learning rate, the batch and the seed."""
  optimizer: str = option("adam", "Optimizer.", choices=tuple(optim.OPTIMIZERS))
  learning_rate: float = option(5e-3, "Learning rate.")
  lr_schedule: str = option("constant", "constant (the paper's), or cosine: decay from "
                            "--learning_rate to 0 over the budget (--max_epochs / "
                            "--max_seconds, whichever ends first).", choices=optim.LR_SCHEDULES)
  batch_size: int = option(1024, "Training queries per step.")
  seed: int = option(0, "Random seed (initialisation and shuffling).")
  warmup_epochs: int = option(0, "Learning-rate warm-up: epoch e < W runs at (e + 1) / (W + 1) "
                              "of the scheduled rate (0: none).")
  ema_decay: float = option(0.0, "Validate and test an exponential moving average of the "
                            "parameters, updated after every step with this decay (0: off; "
                            "0.999 averages over about 1000 steps).")

  def __post_init__(self):
    _check_finite(self)
    _check_choices(self)
    _check_positive(self, "batch_size", "learning_rate")
    _check_not_negative(self, "warmup_epochs")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"--ema_decay must lie in [0, 1), got {self.ema_decay}")


@dataclasses.dataclass(frozen=True)
class BudgetConfig:
  """When training stops, and how often it validates."""
  max_seconds: float = option(30.0, "Training-time budget in seconds (0: none). Compile and "
                              "validation time are not counted.", resumable=True)
  max_epochs: int = option(0, "Epoch budget (0: none).", resumable=True)
  eval_every: int = option(0, "Validate every this many epochs; 0: about 20 times over the "
                           "budget.", resumable=True)
  segment_seconds: float = option(5.0, "Training runs in segments of about this many seconds "
                                  "(sized from the measured step time; an epoch of a small "
                                  "graph is one segment); the time budget, progress lines, "
                                  "validation, checkpoints and stop requests act between "
                                  "segments, so also inside an epoch. 0: one segment per "
                                  "epoch. Segments never change the numbers.", resumable=True)
  eval_chunk: int = option(256, "Queries ranked at a time (memory: chunk x entities; on a CPU "
                           "at most 2^24 / entities); halved automatically when the device runs "
                           "out of memory.", resumable=True)
  eval_protocol: str = option("filtered", "How valid and test are ranked: filtered (against "
                              "every entity, other known answers removed), or ogb (against the "
                              "head and tail negatives the dataset ships, as OGB's evaluator: "
                              "ogbl-wikikg2).", choices=EVAL_PROTOCOLS)
  patience: int = option(0, "Early stopping: end training after this many validations without "
                         "a valid-MRR gain of more than --min_delta over the best (0: off).",
                         resumable=True)
  min_delta: float = option(0.0, "Early stopping: the smallest valid-MRR gain that counts as "
                            "an improvement.", resumable=True)

  def __post_init__(self):
    _check_finite(self)
    _check_not_negative(self, "max_seconds", "max_epochs")
    if self.max_seconds <= 0 and self.max_epochs <= 0:
      raise ValueError("set a budget: --max_seconds > 0 or --max_epochs > 0")
    for name in ("eval_every", "patience", "min_delta", "segment_seconds"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    _check_positive(self, "eval_chunk")
    _check_choice(self, "eval_protocol")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Checkpoints, the device layout and metric writers."""
  checkpoint_every_epochs: int = option(0, "Checkpoint every this many epochs (0: by seconds "
                                        "only); also on SIGTERM/SIGINT and at the end.",
                                        resumable=True)
  checkpoint_every_seconds: float = option(300.0, "Checkpoint when this many wall-clock "
                                           "seconds passed since the last one (0: off).",
                                           resumable=True)
  max_to_keep: int = option(3, "Checkpoints kept in <workdir>/checkpoints.", resumable=True)
  mesh: str = option("auto", "Device layout: 'auto' (one device, or every GPU on the data "
                     "axis and the entity table row-sharded over a model axis once it would "
                     "not fit), 'none' (one device), or 'data:D,model:M'. A run may resume on "
                     "another mesh.", resumable=True)
  tensorboard_dir: str = option("", "Also write the validation metrics as TensorBoard event "
                                "files here (needs tensorboardX).", resumable=True)
  wandb_project: str = option("", "Also log the validation metrics to this Weights & Biases "
                              "project (needs wandb).", resumable=True)

  def __post_init__(self):
    _check_finite(self)
    _check_positive(self, "max_to_keep")
    _check_not_negative(self, "checkpoint_every_epochs", "checkpoint_every_seconds")
    if self.mesh.strip() not in ("auto", "none"):
      mesh.mesh_axis_sizes(self.mesh)  # the syntax; the device count is checked at start


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a training run needs; ``hale_jax.launch`` fills it from flags."""
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)
  run: RunConfig = dataclasses.field(default_factory=RunConfig)

  def __post_init__(self):
    losses.num_sampled_queries(self.optim.batch_size, self.objective.alpha)
    if self.objective.query_dropout and models.is_hyperbolic(self.model.model):
      raise ValueError(f"--query_dropout applies to the Euclidean models, not {self.model.model}"
                       " (a rescaled point of the Poincare ball can leave it)")

  @classmethod
  def make(cls, **flat: Any) -> "Config":
    """A config from flat field names (``Config.make(model="RotE", lam=1.0)``); the rest
    default.  Raises ValueError on an unknown name."""
    owner = field_owners(cls)
    unknown = sorted(set(flat) - set(owner))
    if unknown:
      raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
    groups = {g: {k: v for k, v in flat.items() if owner[k] == g} for g in group_types(cls)}
    return cls(**{g: t(**groups[g]) for g, t in group_types(cls).items()})

  def replace(self, **flat: Any) -> "Config":
    """A copy with the named flat fields changed (validated again)."""
    return self.make(**{**self.flat(), **flat})

  def flat(self) -> dict[str, Any]:
    """``{field: value}`` over every group (what run.json and results.json store)."""
    return {f.name: getattr(getattr(self, g), f.name)
            for g in group_types(type(self)) for f in dataclasses.fields(getattr(self, g))}

  @property
  def num_sampled(self) -> int:
    """``k``, the sampled queries per step of HaLE's uniformity term."""
    return losses.num_sampled_queries(self.optim.batch_size, self.objective.alpha)


def group_types(cls: type = Config) -> dict[str, type]:
  """``{group name: its dataclass}`` of a config class (subclasses may add fields)."""
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def field_owners(cls: type = Config) -> dict[str, str]:
  """``{field name: group name}``; raises if two groups declare the same name."""
  owner: dict[str, str] = {}
  for group, kind in group_types(cls).items():
    for f in dataclasses.fields(kind):
      if f.name in owner:
        raise TypeError(f"config field {f.name!r} is declared in both {owner[f.name]!r} and "
                        f"{group!r}")
      owner[f.name] = group
  return owner


def resumable_fields(cls: type = Config) -> frozenset[str]:
  """The fields a resumed run may change (declared with ``resumable=True``)."""
  return frozenset(f.name for kind in group_types(cls).values() for f in dataclasses.fields(kind)
                   if f.metadata.get("resumable"))
