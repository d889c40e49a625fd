"""The five KGE models of the paper as pure functions over parameter pytrees.

A model is a transform ``Phi(params, heads, relations) -> queries [B, d]`` (paper Eqs. 10-14).
Every model shares the similarity ``-||q - e||^2`` and a relation-specific positive scale
``c_r`` (Eq. 8), so a triple's HaLE score is ``-h(c_r * ||Phi(e_h, r) - e_t||^2)``.

Relations are indexed over ``2 |R|`` ids: ``r`` and its reciprocal ``r + |R|`` have their own
parameters, and head prediction ``(?, r, t)`` is tail prediction ``(t, r + |R|, ?)``.  So
:func:`init_params` takes the number of relations ``|R|`` and makes relation tables of
``2 |R|`` rows.

Parameters (a plain dict; ``N`` entities, ``R2 = 2 |R|`` relation ids, ``d`` dimensions):

==============  ============  ===============================================================
key             shape         used by
==============  ============  ===============================================================
``entity``      ``[N, d]``    all
``scale``       ``[R2]``      all; ``c_r = softplus(scale)``, initialised to ``c_r = 1``
``translation`` ``[R2, d]``   TransE (``r``), RotE and RotL (``r'``)
``diagonal``    ``[R2, d]``   DistMult
``rotation``    ``[R2, d]``   RotatE, RotE, RotL
``alpha``       ``[R2]``      RotL, initialised to 1
``bias_head``   ``[N]``       optional (``entity_bias="head_tail"``): KGEmb's head bias
``bias_tail``   ``[N]``       optional (``entity_bias="tail"`` or ``"head_tail"``): tail bias
==============  ============  ===============================================================

Entity biases.  KGEmb (the source of the paper's SamNeg baselines) scores a triple
``b_h + b_t - ||Phi(e_h, r) - e_t||^2`` with learned per-entity biases, initialised to 0.
With biases the score is ``b_h + b_t - h(c_r d^2)`` and the biases take part in ranking:
:func:`ranking_distances` is what every ranking sorts.

Rotations (RotatE, RotE, RotL) act on ``d / 2`` planes of 2x2 Givens blocks, as in KGEmb
(Chami et al. 2020, the source of RotE): dimensions ``(2i, 2i+1)`` of ``e_h`` are rotated by
the unit vector ``(cos t_i, sin t_i) = rot[2i:2i+2] / ||rot[2i:2i+2]||`` of the relation's
``rotation`` row, i.e. ``(x0, x1) -> (cos x0 - sin x1, sin x0 + cos x1)``.  The norm is
clamped at 1e-15, as in KGEmb.  ``d`` must be even for these models.

Rotation initialisation (``rotation_init``).  Only the direction of each 2-vector is used, but
its length sets how fast Adam turns the plane: an update of about ``lr`` moves the angle by about
``lr / ||rot[2i:2i+2]||`` radians.  ``"uniform"`` (the default) draws the table from
``U(-1, 1)``, KGEmb's initialisation, so the first steps turn each plane by about ``lr``
radians.  ``"normal"`` draws it like the other tables from ``init_scale * N(0, 1)`` (lengths
~1e-3), so the first steps turn the planes by radians at a time, i.e. at random.

RotL's flexible addition ``x (+)_alpha y`` (Eq. 14, after Wang et al. 2021, whose distance is
Eq. 16) is read as::

    x (+)_alpha y = alpha_r * (x + y) / max(1 + <x, y>, 0.05)

with ``x = Rot(r, e_h)``, ``y = r'`` and ``alpha_r`` a trainable relation-specific scalar
(this ``alpha`` is not the query-sampling proportion).  The paper gives no formula for
``(+)_alpha``; this is Eq. 16's ``alpha (-q + e) / (1 - q . e)`` with ``-q`` replaced by the
rotated head and ``e`` by the translation.  The denominator is clamped at 0.05 so the
transform stays finite where ``<x, y>`` approaches -1 (never reached from the 1e-3
initialisation in our runs); inside that region it is the formula exactly.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Array = jax.Array
Params = dict[str, Array]

ROTL_MIN_DENOMINATOR = 0.05
_SOFTPLUS_INV_1 = math.log(math.expm1(1.0))  # softplus(x) == 1


def givens_rotate(rotation: ArrayLike, x: ArrayLike) -> Array:
  """Rotates ``x [B, d]`` by the ``d/2`` Givens blocks of ``rotation [B, d]``; returns ``[B, d]``."""
  rotation = jnp.asarray(rotation)
  x = jnp.asarray(x)
  pairs = rotation.reshape(rotation.shape[:-1] + (-1, 2))
  pairs = pairs / jnp.maximum(jnp.linalg.norm(pairs, axis=-1, keepdims=True), 1e-15)
  cos, sin = pairs[..., 0], pairs[..., 1]
  xp = x.reshape(x.shape[:-1] + (-1, 2))
  x0, x1 = xp[..., 0], xp[..., 1]
  out = jnp.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], axis=-1)
  return out.reshape(x.shape)


def flexible_add(x: ArrayLike, y: ArrayLike, alpha: ArrayLike) -> Array:
  """RotL's ``x (+)_alpha y`` for ``x, y [B, d]`` and ``alpha [B]``; returns ``[B, d]``."""
  x = jnp.asarray(x)
  y = jnp.asarray(y)
  denom = jnp.maximum(1.0 + jnp.sum(x * y, axis=-1, keepdims=True), ROTL_MIN_DENOMINATOR)
  return jnp.asarray(alpha)[..., None] * (x + y) / denom


def _transe(p: Params, e: Array, r: Array) -> Array:
  return e + p["translation"][r]


def _distmult(p: Params, e: Array, r: Array) -> Array:
  return e * p["diagonal"][r]


def _rotate(p: Params, e: Array, r: Array) -> Array:
  return givens_rotate(p["rotation"][r], e)


def _rote(p: Params, e: Array, r: Array) -> Array:
  return givens_rotate(p["rotation"][r], e) + p["translation"][r]


def _rotl(p: Params, e: Array, r: Array) -> Array:
  return flexible_add(givens_rotate(p["rotation"][r], e), p["translation"][r], p["alpha"][r])


_TRANSFORMS: dict[str, Callable[[Params, Array, Array], Array]] = {
    "transe": _transe,
    "distmult": _distmult,
    "rotate": _rotate,
    "rote": _rote,
    "rotl": _rotl,
}
_RELATION_TABLES = {
    "transe": ("translation",),
    "distmult": ("diagonal",),
    "rotate": ("rotation",),
    "rote": ("rotation", "translation"),
    "rotl": ("rotation", "translation"),
}
MODEL_NAMES = ("TransE", "DistMult", "RotatE", "RotE", "RotL")
ROTATION_MODELS = tuple(m for m, tables in _RELATION_TABLES.items() if "rotation" in tables)


def canonical_model(name: str) -> str:
  """Maps a model name in any case to its key (``"RotL" -> "rotl"``); raises ValueError."""
  key = name.lower()
  if key not in _TRANSFORMS:
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
  return key


ROTATION_INITS = ("uniform", "normal")


def check_rotation_init(rotation_init: str) -> None:
  """Raises ValueError unless ``rotation_init`` is one of ``ROTATION_INITS``."""
  if rotation_init not in ROTATION_INITS:
    raise ValueError(f"unknown rotation_init {rotation_init!r}; choose one of "
                     f"{', '.join(ROTATION_INITS)}")


ENTITY_BIAS_MODES = ("none", "tail", "head_tail")
ENTITY_TABLES = ("entity", "bias_head", "bias_tail")  # the tables with one row per entity


def init_params(model: str, key: jax.Array, num_entities: int, num_relations: int, dim: int,
                init_scale: float = 1e-3, dtype: Any = jnp.float32, entity_bias: str = "none",
                rotation_init: str = "uniform") -> Params:
  """Initialises a model's parameters.

  Args:
    model: one of ``MODEL_NAMES`` (any case).
    key: PRNG key.
    num_entities: ``N``.
    num_relations: ``|R|``; the relation tables get ``2 |R|`` rows, one per relation and one
      per reciprocal (module docstring).
    dim: ``d``; even for the rotation models.
    init_scale: standard deviation of the Gaussian initialisation of every table (the
      ``rotation`` table only with ``rotation_init="normal"``).
    dtype: of every table (float64 needs ``jax_enable_x64``; the tables are drawn in float32
      and cast, so the float64 start equals the float32 one).
    entity_bias: ``"none"``, ``"tail"`` (a ``bias_tail [N]`` table of zeros) or ``"head_tail"``
      (``bias_head`` too).
    rotation_init: ``"uniform"`` (``U(-1, 1)``) or ``"normal"`` (``init_scale * N(0, 1)``), see
      the module docstring.

  Returns:
    The parameter dict described in the module docstring.
  """
  model = canonical_model(model)
  check_rotation_init(rotation_init)
  if entity_bias not in ENTITY_BIAS_MODES:
    raise ValueError(f"unknown entity_bias {entity_bias!r}; choose one of "
                     f"{', '.join(ENTITY_BIAS_MODES)}")
  if model in ROTATION_MODELS and dim % 2:
    raise ValueError(f"{model} rotates 2-d planes, so the dimension must be even (got {dim})")
  tables = ("entity",) + _RELATION_TABLES[model]
  num_ids = 2 * num_relations
  params: Params = {}
  for k, name in zip(jax.random.split(key, len(tables)), tables):
    rows = num_entities if name == "entity" else num_ids
    if name == "rotation" and rotation_init == "uniform":
      params[name] = jax.random.uniform(k, (rows, dim), jnp.float32, -1.0, 1.0)
    else:
      params[name] = init_scale * jax.random.normal(k, (rows, dim), jnp.float32)
  params["scale"] = jnp.full((num_ids,), _SOFTPLUS_INV_1, jnp.float32)
  if model == "rotl":
    params["alpha"] = jnp.ones((num_ids,), jnp.float32)
  if entity_bias == "head_tail":
    params["bias_head"] = jnp.zeros((num_entities,), jnp.float32)
  if entity_bias != "none":
    params["bias_tail"] = jnp.zeros((num_entities,), jnp.float32)
  return {name: table.astype(dtype) for name, table in params.items()}


def transform(model: str, params: Params, heads: ArrayLike, relations: ArrayLike) -> Array:
  """Phi: the query vectors ``[B, d]`` of ``heads [B]`` (entity ids) under ``relations [B]``."""
  heads = jnp.asarray(heads)
  relations = jnp.asarray(relations)
  return _TRANSFORMS[canonical_model(model)](params, params["entity"][heads], relations)


def relation_scale(params: Params, relations: ArrayLike) -> Array:
  """``c_r = softplus(scale[r]) > 0`` for ``relations [B]``; returns ``[B]``."""
  return jax.nn.softplus(params["scale"][jnp.asarray(relations)])


MATMUL_MODES = ("float32", "tf32", "bf16")


def check_matmul(matmul: str) -> None:
  """Raises ValueError unless ``matmul`` is one of :data:`MATMUL_MODES`."""
  if matmul not in MATMUL_MODES:
    raise ValueError(f"unknown matmul mode {matmul!r}; choose one of {', '.join(MATMUL_MODES)}")


def _inner_products(q: Array, e: Array, matmul: str) -> Array:
  """``q @ e.T`` (``[B, d] x [N, d] -> [B, N]``) with the inputs rounded as ``matmul`` says and
  the products summed in the inputs' own float type (float32, or float64 under x64).

  - ``float32``: exact products, ``Precision.HIGHEST``.  JAX's default precision lets a GPU of
    the Ampere generation or later round float32 matmul inputs to TF32 (10 mantissa bits), which
    would perturb small distances through the cancellation in ``|q|^2 + |e|^2 - 2 q.e``;
    HIGHEST rules that out.
  - ``tf32``: the inputs rounded to TF32 (``lax.reduce_precision``, 8 exponent and 10 mantissa
    bits), then the default precision: TF32 tensor cores on such GPUs, which multiply these
    inputs exactly; on a CPU the same numbers through float32 units.
  - ``bf16``: the inputs cast to bfloat16 (7 mantissa bits), float32 accumulation
    (``preferred_element_type``): bfloat16 tensor cores on a GPU.
  """
  check_matmul(matmul)
  out = jnp.result_type(q, e)
  if matmul == "float32":
    return jnp.dot(q, e.T, precision=jax.lax.Precision.HIGHEST)
  if matmul == "tf32":
    q, e = (jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=10) for x in (q, e))
    return jnp.dot(q, e.T, preferred_element_type=out)
  return jnp.dot(q.astype(jnp.bfloat16), e.T.astype(jnp.bfloat16), preferred_element_type=out)  # bf16


def squared_distances(queries: ArrayLike, entities: ArrayLike, matmul: str = "float32") -> Array:
  """``||q_b - e_n||^2`` for ``queries [B, d]`` and ``entities [N, d]``; returns ``[B, N]``.

  Matmul form ``|q|^2 + |e|^2 - 2 q.e``, clamped at 0 against cancellation.  The clamp is a
  ``where`` rather than ``maximum``: XLA's CPU backend may compile ``max`` inside a loop to an
  instruction that turns NaN into 0 (fast min/max), and a NaN must stay NaN (ranking puts it
  last).  ``matmul`` (one of :data:`MATMUL_MODES`) sets the precision of ``q.e`` only; the
  squared norms and the sum are always in the inputs' float type.  Ranking always uses the
  default, exact ``float32``; ``tf32``/``bf16`` are training options (``--matmul``).
  """
  q = jnp.asarray(queries)
  e = jnp.asarray(entities)
  q2 = jnp.sum(q * q, axis=-1, keepdims=True)
  e2 = jnp.sum(e * e, axis=-1)
  d = q2 + e2[None, :] - 2.0 * _inner_products(q, e, matmul)
  return jnp.where(d < 0, jnp.zeros_like(d), d)


def pair_squared_distances(queries: ArrayLike, targets: ArrayLike) -> Array:
  """``||q_b - t_b||^2`` row by row for ``queries, targets [B, d]``; returns ``[B]``."""
  diff = jnp.asarray(queries) - jnp.asarray(targets)
  return jnp.sum(diff * diff, axis=-1)


def has_entity_bias(params: Params) -> bool:
  """Whether ``params`` carry KGEmb's learned entity biases."""
  return "bias_tail" in params


def ranking_distances(params: Params, queries: ArrayLike, relations: ArrayLike,
                      activation: Callable[[ArrayLike], Array] | None = None) -> Array:
  """What ranking sorts, smaller is better: ``[B, N]`` for ``queries [B, d]``, ``relations [B]``.

  Without entity biases: the squared distance ``||q_b - e_n||^2``.  ``c_r > 0`` and an
  increasing ``h`` could not reorder it (only add ties where ``h`` saturates), so they are left
  out.  With entity biases (``bias_tail`` in ``params``): ``h(c_r ||q_b - e_n||^2) - b_t[n]``,
  minus the triple's score up to the query's own constant ``b_h``; ``activation=None`` means
  the identity (plain SamNeg).
  """
  d = squared_distances(queries, params["entity"])
  if not has_entity_bias(params):
    return d
  x = relation_scale(params, relations)[:, None] * d
  if activation is not None:
    x = activation(x)
  return x - params["bias_tail"][None, :]
