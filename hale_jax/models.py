"""The KGE models as pure functions over parameter pytrees: the paper's five and three hyperbolic.

A model is a transform ``Phi(params, heads, relations) -> queries [B, d]`` (paper Eqs. 10-14)
and a squared distance ``d^2(q, e)`` between a query and an entity (``hale_jax.distances``):
``||q - e||^2`` for the paper's five models, the squared Poincaré distance for the hyperbolic
RotH, RefH and AttH.  Every model shares a relation-specific positive scale ``c_r`` (Eq. 8),
so a triple's HaLE score is ``-h(c_r * d^2(Phi(e_h, r), e_t))``.

Relations are indexed over ``2 |R|`` ids: ``r`` and its reciprocal ``r + |R|`` have their own
parameters, and head prediction ``(?, r, t)`` is tail prediction ``(t, r + |R|, ?)``.  So
:func:`init_params` takes the number of relations ``|R|`` and makes relation tables of
``2 |R|`` rows.

Parameters (a plain dict; ``N`` entities, ``R2 = 2 |R|`` relation ids, ``d`` dimensions):

===================  ============  ==========================================================
key                  shape         used by
===================  ============  ==========================================================
``entity``           ``[N, d]``    all (tangent vectors at the origin for RotH, RefH, AttH)
``scale``            ``[R2]``      all; ``c_r = softplus(scale)``, initialised to ``c_r = 1``
``translation``      ``[R2, d]``   TransE (``r``), RotE and RotL (``r'``), RotH, RefH, AttH
``diagonal``         ``[R2, d]``   DistMult
``rotation``         ``[R2, d]``   RotatE, RotE, RotL, RotH, AttH
``alpha``            ``[R2]``      RotL, initialised to 1
``curvature``        ``[R2]``      RotH, RefH, AttH: the ball's curvature ``-softplus(.)``,
                                   initialised to 1 (KGEmb)
``pre_translation``  ``[R2, d]``   RotH: the translation added before the rotation
``reflection``       ``[R2, d]``   RefH, AttH: Givens reflections, initialised like
                                   ``rotation``
``context``          ``[R2, d]``   AttH: the attention's context vector
``bias_head``        ``[N]``       optional (``entity_bias="head_tail"``): KGEmb's head bias
``bias_tail``        ``[N]``       optional (``entity_bias="tail"`` or ``"head_tail"``): tail bias
===================  ============  ==========================================================

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

Hyperbolic models (Chami et al., ACL 2020, as KGEmb's ``models/hyperbolic.py`` defines them;
the ball maths in :mod:`hale_jax.hyperbolic`).  Each relation has a curvature ``c =
softplus(curvature[r])``; tables hold tangent vectors mapped to the ball by ``expmap0(., c)``,
``(+)`` is Möbius addition and ``proj`` the projection inside the ball's boundary margin:

- RotH: ``proj(Rot(r, proj(expmap0(e_h) (+) expmap0(pre_translation))) (+) expmap0(translation))``;
- RefH: ``proj(expmap0(Ref(r, e_h)) (+) expmap0(translation))``;
- AttH: ``proj(expmap0(a_1 Ref(r, e_h) + a_2 Rot(r, e_h)) (+) expmap0(translation))`` with
  ``(a_1, a_2) = softmax(<context, Ref(r, e_h)> / sqrt(d), <context, Rot(r, e_h)> / sqrt(d))``.

``Ref`` reflects each plane by the unit vector ``(cos t, sin t)`` of the ``reflection`` row:
``(x0, x1) -> (cos x0 + sin x1, sin x0 - cos x1)`` (KGEmb's ``givens_reflection`` since its
fix of an index typo).  The query is compared with ``expmap0(e_t, c)`` under the query's own
curvature.  Initialisation as KGEmb: every table ``init_scale * N(0, 1)``, ``rotation`` and
``reflection`` ``U(-1, 1)`` (``rotation_init``), ``curvature`` 1.  Where hale_jax differs:

- KGEmb leaves RotH's last Möbius sum unprojected; here it is projected like RefH's and AttH's,
  so rounding cannot put a float32 query outside the ball;
- KGEmb allocates RefH's and AttH's translation as ``[R2, 2d]`` and uses its first half; here
  the table is ``[R2, d]`` (the unused half never changes anything);
- HaLE's relation scale ``c_r`` multiplies the squared distance as for every model.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hale_jax import activations, distances, hyperbolic

Array = jax.Array
Params = dict[str, Array]

ROTL_MIN_DENOMINATOR = 0.05
_SOFTPLUS_INV_1 = math.log(math.expm1(1.0))  # softplus(x) == 1


def _givens(rotation: ArrayLike, x: ArrayLike, reflect: bool) -> Array:
  """Each plane ``(2i, 2i+1)`` of ``x [B, d]`` rotated (or reflected) by the unit vector
  ``(cos, sin)`` of the same plane of ``rotation [B, d]``; returns ``[B, d]``."""
  rotation = jnp.asarray(rotation)
  x = jnp.asarray(x)
  pairs = rotation.reshape(rotation.shape[:-1] + (-1, 2))
  pairs = pairs / jnp.maximum(jnp.linalg.norm(pairs, axis=-1, keepdims=True), 1e-15)
  cos, sin = pairs[..., 0], pairs[..., 1]
  xp = x.reshape(x.shape[:-1] + (-1, 2))
  x0, x1 = xp[..., 0], xp[..., 1]
  if reflect:
    out = jnp.stack([cos * x0 + sin * x1, sin * x0 - cos * x1], axis=-1)
  else:
    out = jnp.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], axis=-1)
  return out.reshape(x.shape)


def givens_rotate(rotation: ArrayLike, x: ArrayLike) -> Array:
  """Rotates ``x [B, d]`` by the ``d/2`` Givens blocks of ``rotation [B, d]``; returns ``[B, d]``."""
  return _givens(rotation, x, reflect=False)


def givens_reflect(reflection: ArrayLike, x: ArrayLike) -> Array:
  """Reflects ``x [B, d]`` by the ``d/2`` Givens blocks of ``reflection [B, d]``:
  ``(x0, x1) -> (cos x0 + sin x1, sin x0 - cos x1)`` per plane; returns ``[B, d]``."""
  return _givens(reflection, x, reflect=True)


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


def ball_curvature(params: Params, relations: ArrayLike) -> Array | None:
  """The curvature ``c = softplus(curvature[r]) > 0`` of each query's ball, ``[B]`` for
  ``relations [B]``; None for the Euclidean models (no ``curvature`` table)."""
  if "curvature" not in params:
    return None
  return jax.nn.softplus(params["curvature"][jnp.asarray(relations)])


def _ball_translate(p: Params, x: Array, r: Array, c: Array) -> Array:
  """``proj(x (+) expmap0(translation[r]))``: the last step of the hyperbolic transforms."""
  return hyperbolic.project(
      hyperbolic.mobius_add(x, hyperbolic.expmap0(p["translation"][r], c), c), c)


def _roth(p: Params, e: Array, r: Array) -> Array:
  c = ball_curvature(p, r)
  x = hyperbolic.mobius_add(hyperbolic.expmap0(e, c),
                            hyperbolic.expmap0(p["pre_translation"][r], c), c)
  return _ball_translate(p, givens_rotate(p["rotation"][r], hyperbolic.project(x, c)), r, c)


def _refh(p: Params, e: Array, r: Array) -> Array:
  c = ball_curvature(p, r)
  return _ball_translate(p, hyperbolic.expmap0(givens_reflect(p["reflection"][r], e), c), r, c)


def _atth(p: Params, e: Array, r: Array) -> Array:
  c = ball_curvature(p, r)
  candidates = jnp.stack([givens_reflect(p["reflection"][r], e),
                          givens_rotate(p["rotation"][r], e)], axis=1)      # [B, 2, d]
  logits = jnp.sum(p["context"][r][:, None, :] * candidates, axis=-1) / math.sqrt(e.shape[-1])
  attended = jnp.sum(jax.nn.softmax(logits, axis=1)[..., None] * candidates, axis=1)
  return _ball_translate(p, hyperbolic.expmap0(attended, c), r, c)


Transform = Callable[[Params, Array, Array], Array]
# The registry: a model's name -> its transform and its relation tables (``[R2, d]`` each,
# drawn by init_params).  MODEL_NAMES, the ``--model`` choices, follow from it.
_MODELS: dict[str, tuple[Transform, tuple[str, ...]]] = {
    "TransE": (_transe, ("translation",)),
    "DistMult": (_distmult, ("diagonal",)),
    "RotatE": (_rotate, ("rotation",)),
    "RotE": (_rote, ("rotation", "translation")),
    "RotL": (_rotl, ("rotation", "translation")),
    "RotH": (_roth, ("rotation", "pre_translation", "translation")),
    "RefH": (_refh, ("reflection", "translation")),
    "AttH": (_atth, ("rotation", "reflection", "context", "translation")),
}
MODEL_NAMES = tuple(_MODELS)
_TRANSFORMS = {name.lower(): transform for name, (transform, _) in _MODELS.items()}
_RELATION_TABLES = {name.lower(): tables for name, (_, tables) in _MODELS.items()}
# The models of the HaLE paper's tables (benchmarks/paper_tables.py): a fixed list, not every
# registered model.
PAPER_MODELS = ("TransE", "DistMult", "RotatE", "RotE", "RotL")
# The models on a Poincaré ball: a curvature table, and their own distance (hale_jax.distances).
HYPERBOLIC_MODELS = ("RotH", "RefH", "AttH")
assert set(PAPER_MODELS + HYPERBOLIC_MODELS) <= set(MODEL_NAMES)
GIVENS_TABLES = ("rotation", "reflection")  # act on 2-d planes, drawn as rotation_init says
# The models with a Givens table: their dimension must be even.
ROTATION_MODELS = tuple(m for m, tables in _RELATION_TABLES.items()
                        if set(tables) & set(GIVENS_TABLES))


def canonical_model(name: str) -> str:
  """Maps a model name in any case to its key (``"RotL" -> "rotl"``); raises ValueError."""
  key = name.lower()
  if key not in _TRANSFORMS:
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
  return key


def is_hyperbolic(name: str) -> bool:
  """Whether the model of ``name`` (any case) lives on a Poincaré ball."""
  return canonical_model(name) in (m.lower() for m in HYPERBOLIC_MODELS)


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
    dim: ``d``; even for the models with Givens rotations or reflections.
    init_scale: standard deviation of the Gaussian initialisation of every table (the
      ``rotation`` and ``reflection`` tables only with ``rotation_init="normal"``).
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
    raise ValueError(f"{model} rotates or reflects 2-d planes, so the dimension must be even "
                     f"(got {dim})")
  tables = ("entity",) + _RELATION_TABLES[model]
  num_ids = 2 * num_relations
  params: Params = {}
  for k, name in zip(jax.random.split(key, len(tables)), tables):
    rows = num_entities if name == "entity" else num_ids
    if name in GIVENS_TABLES and rotation_init == "uniform":
      params[name] = jax.random.uniform(k, (rows, dim), jnp.float32, -1.0, 1.0)
    else:
      params[name] = init_scale * jax.random.normal(k, (rows, dim), jnp.float32)
  params["scale"] = jnp.full((num_ids,), _SOFTPLUS_INV_1, jnp.float32)
  if model == "rotl":
    params["alpha"] = jnp.ones((num_ids,), jnp.float32)
  if model in (m.lower() for m in HYPERBOLIC_MODELS):
    params["curvature"] = jnp.ones((num_ids,), jnp.float32)  # KGEmb's c = softplus(1)
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


def has_entity_bias(params: Params) -> bool:
  """Whether ``params`` carry KGEmb's learned entity biases."""
  return "bias_tail" in params


def ranking_distances(params: Params, queries: ArrayLike, relations: ArrayLike,
                      activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION) -> Array:
  """What ranking sorts, smaller is better: ``[B, N]`` for ``queries [B, d]``, ``relations [B]``.

  Without entity biases: the model's squared distance ``d^2(q_b, e_n)``
  (:func:`hale_jax.distances.squared_distances`, under each query's curvature for the hyperbolic models).
  ``c_r > 0`` and an increasing ``h`` could not reorder it (only add ties where ``h``
  saturates), so they are left out.  With entity biases (``bias_tail`` in ``params``):
  ``h(c_r d^2(q_b, e_n)) - b_t[n]``, minus the triple's score up to the query's own constant
  ``b_h``.  ``activation`` is the run's ``h``, a name or callable; the default (and
  ``None``) is Hanon, as everywhere in the library; ``"identity"`` for plain SamNeg.
  """
  d = distances.squared_distances(queries, params["entity"],
                                  curvature=ball_curvature(params, relations))
  if not has_entity_bias(params):
    return d
  x = activations.resolve(activation)(relation_scale(params, relations)[:, None] * d)
  return x - params["bias_tail"][None, :]


_MOVED_TO_DISTANCES = ("MATMUL_MODES", "check_matmul", "squared_distances", "pair_squared_distances")


def __getattr__(name: str):
  """Names this module no longer has: an AttributeError naming what replaced them."""
  if name in _MOVED_TO_DISTANCES:
    raise AttributeError(f"hale_jax.models.{name} was removed; use hale_jax.distances.{name} "
                         f"(from hale_jax import distances)")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
