"""Float64 NumPy references shared by the tests (import with ``from reference import ...``).

Everything here is written from the formulas of the paper and of the library's docstrings, not
from the library's rewritten forms, and computes in float64.  No test module imports another test
module: what two of them share lives here.

Groups:

- activations (paper Eqs. 6-7): ``np_hanon`` ... ``np_identity``, their derivatives,
  ``REFERENCE``, ``DEFAULTS``, ``np_activation``;
- numerics: ``np_softplus``, ``np_sigmoid``, ``np_logsumexp``, ``np_softmax``,
  ``np_round_mantissa``, ``np_squared_distances``;
- models: ``np_givens``, ``np_givens_reflect``, ``np_transform``, ``random_params``,
  ``random_batch``, ``to_f64``;
- hyperbolic models: ``np_project``, ``np_expmap0``, ``np_mobius_add``,
  ``np_hyperbolic_distance2``, ``np_ball_curvature``, ``np_model_distance2`` (either geometry);
- losses: ``np_alignment_terms``, ``np_uniformity_terms``, ``np_hale_loss``,
  ``np_uniformity_lse``, ``np_batch_loss`` (HaLE on a batch of triples), ``np_samneg``,
  ``np_advneg``, ``np_allneg``, ``np_nonneg``, ``np_spread_penalty``, ``np_biased_scores``;
- ranking: ``np_ranks``, ``known_answers``, ``split_queries`` and the small named graph ``SPLITS``;
- helpers: ``FD_EPS``, ``rel_err``, ``seeded_rng``.
"""

from __future__ import annotations

import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from hale_jax import models

# float64 central differences for jax.test_util.check_grads: small steps keep the truncation
# error well below its tolerance (round-off stays around 1e-10).
FD_EPS = 1e-6


def seeded_rng(name: str) -> np.random.Generator:
  """A generator seeded from ``name`` (a test id) and ``HALE_TEST_SEED``, like the ``rng``
  fixture of conftest.py, for unittest-style tests (``chex.TestCase``) that take no fixtures.
  The seed is printed, so a failing test's captured output shows it."""
  seed = (zlib.crc32(name.encode("utf-8")) + int(os.environ.get("HALE_TEST_SEED", "0"))) % 2**32
  print(f"rng seed: np.random.default_rng({seed})  ({name})")
  return np.random.default_rng(seed)


def rel_err(got, want) -> float:
  """``||got - want|| / ||want||`` in float64 (Frobenius norms over all entries)."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


# ----------------------------------------------------------------------------------------------
# Activations (paper Eqs. 6-7), straight from the formulas.


def np_hanon(x, beta=3.0, gamma=10.0):
  return 1.0 / (1.0 / gamma + np.exp(-beta * (x - 0.5)))


def np_halin(x, beta=10.0, gamma=10.0):
  return np.where(x < 1.0, 2.0 * x, np.minimum(beta * (x - 1.0) + 2.0, gamma))


def np_xexp(x, beta=None, gamma=None):
  return x * np.exp(x)


def np_linear2x(x, beta=None, gamma=None):
  return 2.0 * x


def np_two_arctanh(x, beta=None, gamma=None):
  return 2.0 * np.arctanh(x)


def np_identity(x, beta=None, gamma=None):
  return np.array(x, dtype=np.float64)


# Analytic derivatives (away from Halin's kinks).
def np_dhanon(x, beta=3.0, gamma=10.0):
  e = np.exp(-beta * (x - 0.5))
  return beta * e / (1.0 / gamma + e) ** 2


def np_dhalin(x, beta=10.0, gamma=10.0):
  return np.where(x < 1.0, 2.0, np.where(beta * (x - 1.0) + 2.0 < gamma, beta, 0.0))


# name -> (value, derivative), each ``f(x, beta, gamma)``.
REFERENCE = {
    "hanon": (np_hanon, np_dhanon),
    "halin": (np_halin, np_dhalin),
    "xexp": (np_xexp, lambda x, b=None, g=None: (1.0 + x) * np.exp(x)),
    "linear2x": (np_linear2x, lambda x, b=None, g=None: np.full_like(x, 2.0)),
    "two_arctanh": (np_two_arctanh, lambda x, b=None, g=None: 2.0 / (1.0 - x * x)),
    "identity": (np_identity, lambda x, b=None, g=None: np.ones_like(x)),
}

# The paper's (beta, gamma) of the two bounded functions (Fig. 1).
DEFAULTS = {"hanon": (3.0, 10.0), "halin": (10.0, 10.0)}


def _np_function(name, which, beta, gamma):
  """Element ``which`` of ``REFERENCE[name]`` (0: h, 1: h') as float64 ``x -> y``."""
  ref = REFERENCE[name][which]
  if name in DEFAULTS:
    b = DEFAULTS[name][0] if beta is None else beta
    return lambda x: ref(np.asarray(x, np.float64), b, gamma)
  return lambda x: ref(np.asarray(x, np.float64))


def np_activation(name, beta=None, gamma=10.0):
  """``x -> h(x)`` in float64, with ``activations.get_activation``'s defaults."""
  return _np_function(name, 0, beta, gamma)


def np_dactivation(name, beta=None, gamma=10.0):
  """``x -> h'(x)`` in float64 (see :func:`np_activation`)."""
  return _np_function(name, 1, beta, gamma)


# ----------------------------------------------------------------------------------------------
# Numerics.


def np_softplus(x):
  x = np.asarray(x, np.float64)
  return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0)


def np_sigmoid(z):
  return np.exp(-np.logaddexp(0.0, -np.asarray(z, np.float64)))


def np_logsumexp(a, axis=-1):
  a = np.asarray(a, np.float64)
  m = np.max(a, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def np_softmax(a, axis=-1):
  a = np.asarray(a, np.float64)
  return np.exp(a - np.expand_dims(np_logsumexp(a, axis), axis))


def np_round_mantissa(x, bits):
  """float32 ``x`` rounded to ``bits`` explicit mantissa bits (round half to even)."""
  u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
  drop = 23 - bits
  half = (1 << (drop - 1)) - 1
  u = (u + half + ((u >> drop) & 1)) >> drop << drop
  return u.astype(np.uint32).view(np.float32)


def np_squared_distances(q, e, bits=None):
  """``[B, N]`` squared distances in the matmul form ``|q|^2 + |e|^2 - 2 q.e``, clamped at 0;
  with ``bits``, the inputs of ``q.e`` (only) rounded to that many mantissa bits."""
  q64, e64 = np.asarray(q, np.float64), np.asarray(e, np.float64)
  qr, er = (q64, e64) if bits is None else (np_round_mantissa(q, bits).astype(np.float64),
                                            np_round_mantissa(e, bits).astype(np.float64))
  d = np.sum(q64 ** 2, -1)[:, None] + np.sum(e64 ** 2, -1)[None, :] - 2.0 * qr @ er.T
  return np.maximum(d, 0.0)


def np_difference_distances(q, e):
  """``[B, N]`` squared distances in the difference form ``sum (q - e)^2`` (no cancellation)."""
  q, e = np.asarray(q, np.float64), np.asarray(e, np.float64)
  return np.sum((q[:, None, :] - e[None, :, :]) ** 2, axis=-1)


# ----------------------------------------------------------------------------------------------
# Models (hale_jax.models' docstring).


def np_givens(rotation, x):
  """Rotates each plane (2i, 2i+1) of x by the unit vector rotation[2i:2i+2] / its norm."""
  rotation = np.asarray(rotation, np.float64)
  x = np.asarray(x, np.float64)
  out = np.empty_like(x)
  for i in range(x.shape[-1] // 2):
    a, b = rotation[..., 2 * i], rotation[..., 2 * i + 1]
    norm = np.maximum(np.sqrt(a * a + b * b), 1e-15)
    cos, sin = a / norm, b / norm
    x0, x1 = x[..., 2 * i], x[..., 2 * i + 1]
    out[..., 2 * i] = cos * x0 - sin * x1
    out[..., 2 * i + 1] = sin * x0 + cos * x1
  return out


def np_givens_reflect(reflection, x):
  """Reflects each plane (2i, 2i+1) of x: (x0, x1) -> (cos x0 + sin x1, sin x0 - cos x1) with
  (cos, sin) = reflection[2i:2i+2] / its norm."""
  reflection = np.asarray(reflection, np.float64)
  x = np.asarray(x, np.float64)
  out = np.empty_like(x)
  for i in range(x.shape[-1] // 2):
    a, b = reflection[..., 2 * i], reflection[..., 2 * i + 1]
    norm = np.maximum(np.sqrt(a * a + b * b), 1e-15)
    cos, sin = a / norm, b / norm
    x0, x1 = x[..., 2 * i], x[..., 2 * i + 1]
    out[..., 2 * i] = cos * x0 + sin * x1
    out[..., 2 * i + 1] = sin * x0 - cos * x1
  return out


def np_transform(model, params, heads, relations, ball_eps=None):
  """Phi(e_h, r) in float64 for any parameter dict (jax or numpy arrays).  ``ball_eps``: the
  boundary margin of the hyperbolic models' projection; default that of the parameters' dtype
  (1e-5 for float64, else 4e-3)."""
  p = to_f64(params)
  heads = np.asarray(heads)
  relations = np.asarray(relations)
  e = p["entity"][heads]
  model = model.lower()
  if model in ("roth", "refh", "atth"):
    if ball_eps is None:
      ball_eps = 1e-5 if np.asarray(params["entity"]).dtype == np.float64 else 4e-3
    return _np_hyperbolic_transform(model, p, e, relations, ball_eps)
  if model == "transe":
    return e + p["translation"][relations]
  if model == "distmult":
    return e * p["diagonal"][relations]
  rotated = np_givens(p["rotation"][relations], e)
  if model == "rotate":
    return rotated
  if model == "rote":
    return rotated + p["translation"][relations]
  if model == "rotl":
    y = p["translation"][relations]
    denom = np.maximum(1.0 + np.sum(rotated * y, axis=-1, keepdims=True), 0.05)
    return p["alpha"][relations][:, None] * (rotated + y) / denom
  raise AssertionError(model)


def _np_hyperbolic_transform(model, p, e, relations, eps):
  """RotH, RefH and AttH as hale_jax.models' docstring writes them (KGEmb's definitions)."""
  c = np_ball_curvature(p, relations)
  if model == "roth":
    x = np_mobius_add(np_expmap0(e, c, eps), np_expmap0(p["pre_translation"][relations], c, eps),
                      c)
    x = np_givens(p["rotation"][relations], np_project(x, c, eps))
  elif model == "refh":
    x = np_expmap0(np_givens_reflect(p["reflection"][relations], e), c, eps)
  else:
    ref = np_givens_reflect(p["reflection"][relations], e)
    rot = np_givens(p["rotation"][relations], e)
    context = p["context"][relations]
    logits = np.stack([np.sum(context * ref, -1), np.sum(context * rot, -1)], -1)
    weights = np_softmax(logits / np.sqrt(e.shape[-1]))
    x = np_expmap0(weights[:, :1] * ref + weights[:, 1:] * rot, c, eps)
  return np_project(np_mobius_add(x, np_expmap0(p["translation"][relations], c, eps), c), c, eps)


def to_f64(params):
  return {k: np.asarray(v, np.float64) for k, v in params.items()}


def random_params(rng, model, num_entities, num_relations, dim, init_scale=0.5, dtype=None,
                  entity_bias="none"):
  """Random parameters of ``model`` with the tables ``models.init_params`` makes
  (``num_relations = |R|``: relation tables of ``2 |R|`` rows), drawn in NumPy from ``rng``
  (no compilation): Gaussian tables ``init_scale * N(0, 1)``, rotations and reflections
  ``U(-1, 1)``, a non-trivial relation scale ``c_r = softplus(scale)`` (and curvature
  ``softplus(curvature)``) around 1, RotL's alpha in
  ``[0.5, 2]`` and, with ``entity_bias``, biases ``N(0, 1)``.  ``dtype`` (e.g.
  ``jnp.float64`` under x64) casts every table; default float32."""
  shapes = jax.eval_shape(lambda: models.init_params(
      model, jax.random.PRNGKey(0), num_entities, num_relations, dim, init_scale,
      entity_bias=entity_bias))
  params = {}
  for name, shape in sorted(shapes.items()):
    shape = shape.shape
    if name in ("rotation", "reflection"):
      table = rng.uniform(-1.0, 1.0, shape)
    elif name in ("scale", "curvature"):
      table = np.log(np.expm1(1.0)) + rng.normal(0.0, 0.5, shape)
    elif name == "alpha":
      table = rng.uniform(0.5, 2.0, shape)
    elif name.startswith("bias_"):
      table = rng.normal(0.0, 1.0, shape)
    else:
      table = init_scale * rng.normal(0.0, 1.0, shape)
    params[name] = jnp.asarray(table.astype(np.float32), dtype or jnp.float32)
  return params


def random_batch(rng, num_entities, num_relations, batch_size):
  """``[B, 3]`` int32 training queries ``(head, relation id < 2 |R|, tail)``."""
  return np.stack([rng.integers(0, num_entities, batch_size),
                   rng.integers(0, 2 * num_relations, batch_size),
                   rng.integers(0, num_entities, batch_size)], axis=1).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Hyperbolic models (hale_jax.hyperbolic's docstring; KGEmb's utils/hyperbolic.py), from the
# definitions: arrays [..., d] with one curvature c [...] per row, broadcasting.


def np_ball_curvature(p, relations):
  """``softplus(curvature[r])`` of each relation id, or None for a Euclidean model."""
  if "curvature" not in p:
    return None
  return np_softplus(np.asarray(p["curvature"], np.float64)[np.asarray(relations)])


def _norm(x):
  return np.linalg.norm(np.asarray(x, np.float64), axis=-1, keepdims=True)


def np_project(x, c, eps):
  """Rows beyond radius ``(1 - eps) / sqrt(c)`` scaled back to it."""
  max_norm = (1.0 - eps) / np.sqrt(np.asarray(c, np.float64))[..., None]
  norm = np.maximum(_norm(x), 1e-15)
  return np.where(norm > max_norm, x / norm * max_norm, x)


def np_expmap0(u, c, eps=None):
  """``tanh(sqrt(c) |u|) u / (sqrt(c) |u|)``, projected with ``eps`` (None: not projected)."""
  sc = np.sqrt(np.asarray(c, np.float64))[..., None]
  norm = np.maximum(_norm(u), 1e-15)
  y = np.tanh(sc * norm) * u / (sc * norm)
  return y if eps is None else np_project(y, c, eps)


def np_mobius_add(x, y, c):
  """``((1 + 2c<x,y> + c|y|^2) x + (1 - c|x|^2) y) / (1 + 2c<x,y> + c^2|x|^2|y|^2)``."""
  c = np.asarray(c, np.float64)[..., None]
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  x2, y2 = _norm(x) ** 2, _norm(y) ** 2
  xy = np.sum(x * y, axis=-1, keepdims=True)
  num = (1.0 + 2.0 * c * xy + c * y2) * x + (1.0 - c * x2) * y
  return num / np.maximum(1.0 + 2.0 * c * xy + c * c * x2 * y2, 1e-15)


def np_hyperbolic_distance2(x, v, c):
  """``(2 / sqrt(c) * artanh(min(sqrt(c) |(-x) (+)_c y|, 1 - 1e-5)))^2`` with ``y =
  expmap0(v, c)`` (not projected); ``x, v [..., d]``, ``c [...]`` broadcast."""
  c = np.asarray(c, np.float64)
  w = np_mobius_add(-np.asarray(x, np.float64), np_expmap0(v, c), c)
  z = np.minimum(np.sqrt(c) * _norm(w)[..., 0], 1.0 - 1e-5)
  return (2.0 / np.sqrt(c) * np.arctanh(z)) ** 2


def np_model_distance2(p, q, targets, c):
  """The model's squared distance of ``q [..., d]`` to ``targets [..., d]``: Poincaré under
  curvature ``c [...]`` (a hyperbolic model), else Euclidean (``c`` None)."""
  if c is None:
    return np.sum((np.asarray(q, np.float64) - np.asarray(targets, np.float64)) ** 2, axis=-1)
  return np_hyperbolic_distance2(q, targets, c)


# ----------------------------------------------------------------------------------------------
# HaLE (hale_jax.losses: paper Eq. 9 with its typos fixed, and the tail-bias extension).


def np_alignment_terms(pos, h, pos_square=True):
  """``h(x_b^+)^2`` (or ``h(x_b^+)``) per positive: ``[B]``."""
  hp = h(np.asarray(pos, np.float64))
  return hp * hp if pos_square else hp


def np_uniformity_terms(sampled, h, entity_bias=None):
  """``LSE_i(b_i - h(x_ji))`` per sampled query: ``[k]``."""
  scores = -h(np.asarray(sampled, np.float64))
  if entity_bias is not None:
    scores = scores + np.asarray(entity_bias, np.float64)[None, :]
  return np_logsumexp(scores, axis=-1)


def np_hale_loss(pos, sampled, h, lam, pos_square=True, pos_bias=None, entity_bias=None):
  """``lam * mean h(x+)^2 + mean_j LSE_i(b_i - h(x_ji)) [- mean b_t]``."""
  loss = (lam * np.mean(np_alignment_terms(pos, h, pos_square))
          + np.mean(np_uniformity_terms(sampled, h, entity_bias)))
  if pos_bias is not None:
    loss -= np.mean(np.asarray(pos_bias, np.float64))
  return loss


def np_uniformity_lse(q, s, e, h, bias=None):
  """``LSE_i(b_i - h(s_j ||q_j - e_i||^2))`` per query ``[k]`` (difference-form distances)."""
  x = np.asarray(s, np.float64)[:, None] * np_difference_distances(q, e)
  return np_uniformity_terms(x, h, bias)


def _np_queries(model, params, batch, rel_scale):
  """float64 params, the ``[B]`` heads, relations and tails of ``batch [B, 3]``, the queries
  ``Phi(e_h, r) [B, D]``, ``c_r [B]`` (ones without ``rel_scale``) and the curvature ``[B]``
  of each query's ball (None for Euclidean models)."""
  p = to_f64(params)
  batch = np.asarray(batch)
  heads, rels, tails = batch[:, 0], batch[:, 1], batch[:, 2]
  q = np_transform(model, params, heads, rels)
  c = np_softplus(p["scale"][rels]) if rel_scale else np.ones(len(rels))
  return p, heads, rels, tails, q, c, np_ball_curvature(p, rels)


def np_scaled_distances(model, params, batch, rel_scale=True):
  """``(pos [B], all [B, N])``: ``c_r d^2(Phi(e_h, r), e)`` of each query of ``batch [B, 3]``
  against its tail and against every entity (``c_r = 1`` without ``rel_scale``)."""
  p, heads, rels, tails, q, c, kappa = _np_queries(model, params, batch, rel_scale)
  ent = p["entity"]
  pos = c * np_model_distance2(p, q, ent[tails], kappa)
  every = c[:, None] * np_model_distance2(p, q[:, None, :], ent[None],
                                          None if kappa is None else kappa[:, None])
  return pos, every


def np_batch_loss(model, params, batch, h, lam, k, pos_square=True, rel_scale=True):
  """HaLE on a batch of training queries: the first ``k`` rows are the sampled queries; with a
  ``bias_tail`` table in ``params`` the tail-bias loss."""
  pos, every = np_scaled_distances(model, params, batch, rel_scale)
  if "bias_tail" in params:
    b = np.asarray(params["bias_tail"], np.float64)
    return np_hale_loss(pos, every[:k], h, lam, pos_square, b[np.asarray(batch)[:, 2]], b)
  return np_hale_loss(pos, every[:k], h, lam, pos_square)


# ----------------------------------------------------------------------------------------------
# Baselines (hale_jax.baselines): ``(value, gradients)`` from the docstrings' formulas.


def np_samneg(pos, neg, margin=0.0):
  """KGEmb's SamNeg: one mean over the ``B`` positive and ``B m`` negative terms; returns
  ``(value, (d/dpos, d/dneg))``."""
  zp, zn = pos + margin, neg + margin
  count = zp.size + zn.size
  value = (np.sum(np_softplus(-zp)) + np.sum(np_softplus(zn))) / count
  return value, (-np_sigmoid(-zp) / count, np_sigmoid(zn) / count)


def np_advneg(pos, neg, temperature=1.0, margin=0.0):
  """RotatE's self-adversarial loss, weights held constant; ``(value, (d/dpos, d/dneg))``."""
  zp, zn = pos + margin, neg + margin
  b = zp.shape[0]
  w = np_softmax(temperature * zn)
  value = 0.5 * (np.mean(np_softplus(-zp)) + np.mean(np.sum(w * np_softplus(zn), axis=-1)))
  # the weights are constants: d/dz^- of -w log sigmoid(-z) is w sigmoid(z)
  return value, (-0.5 * np_sigmoid(-zp) / b, 0.5 * w * np_sigmoid(zn) / b)


def np_allneg(scores, targets):
  """1-vs-all softmax cross-entropy (Eq. 2); ``(value, d/dscores)``."""
  scores = np.asarray(scores, np.float64)
  b, n = scores.shape
  onehot = np.eye(n)[targets]
  per = np_logsumexp(scores) - scores[np.arange(b), targets]
  return np.mean(per), (np_softmax(scores) - onehot) / b


def np_spread_penalty(entity):
  """``mean_i (||e_i - c||^2 - 1)^2`` with ``c`` the row mean."""
  entity = np.asarray(entity, np.float64)
  gap = np.sum((entity - entity.mean(0)) ** 2, -1) - 1.0
  return np.mean(gap ** 2)


def np_nonneg(pos, entity, reg_weight):
  """``mean (s+)^2 + reg_weight * spread penalty``; ``(value, (d/dpos, d/dentity))``."""
  pos, entity = np.asarray(pos, np.float64), np.asarray(entity, np.float64)
  n = entity.shape[0]
  centred = entity - entity.mean(0)
  gap = np.sum(centred ** 2, -1) - 1.0
  value = np.mean(pos ** 2) + reg_weight * np.mean(gap ** 2)
  u = reg_weight * 4.0 * gap[:, None] * centred / n
  return value, (2.0 * pos / pos.size, u - u.mean(0))


def np_biased_scores(model, params, batch, candidates, h, rel_scale=True):
  """``[B]`` positive and ``[B, C]`` candidate scores ``b_h + b_t - h(c_r ||q - e||^2)``
  (``b_h = 0`` without a ``bias_head`` table, ``b = 0`` without ``bias_tail``);
  ``candidates`` is ``[B, C]`` or ``[1, C]`` entity ids."""
  p, heads, rels, tails, q, c, kappa = _np_queries(model, params, batch, rel_scale)
  ent = p["entity"]
  bh = p["bias_head"][heads] if "bias_head" in p else np.zeros(len(heads))
  bt = p["bias_tail"] if "bias_tail" in p else np.zeros(len(ent))
  pos = bh + bt[tails] - h(c * np_model_distance2(p, q, ent[tails], kappa))
  d = np_model_distance2(p, q[:, None, :], ent[candidates],
                         None if kappa is None else kappa[:, None])
  cand = bh[:, None] + bt[candidates] - h(c[:, None] * d)
  return pos, cand


# ----------------------------------------------------------------------------------------------
# Ranking.


def np_ranks(d, targets, filt):
  """Brute-force filtered ``(optimistic, pessimistic)`` ranks; ``filt[c]`` is the set of
  entities filtered for query ``c``; a NaN target ranks last (``N``)."""
  d = np.asarray(d, np.float64)
  opt, pess = [], []
  for c, t in enumerate(targets):
    dt = d[c, t]
    others = [j for j in range(d.shape[1]) if j != t and j not in filt[c]]
    if np.isnan(dt):
      opt.append(d.shape[1])
      pess.append(d.shape[1])
      continue
    closer = sum(d[c, j] < dt for j in others)
    tied = sum(d[c, j] == dt for j in others)
    opt.append(1 + closer)
    pess.append(1 + closer + tied)
  return opt, pess


def known_answers(data):
  """``{(head, relation id): {tails}}`` over train, valid and test, reciprocals included."""
  nr = data.num_relations
  known = {}
  for h, r, t in np.concatenate([data.train, data.valid, data.test]):
    known.setdefault((h, r), set()).add(t)
    known.setdefault((t, r + nr), set()).add(h)
  return known


def split_queries(data, split="test"):
  """``(heads, relations, targets)`` of a split's tail queries, then its head queries (the
  Evaluator's order)."""
  nr = data.num_relations
  triples = data.split(split)
  queries = [(h, r, t) for h, r, t in triples] + [(t, r + nr, h) for h, r, t in triples]
  return tuple(np.array([q[i] for q in queries]) for i in range(3))

# A small named graph (``hale_jax.data.from_named_triples("tiny", SPLITS)``): 8 entities, 2
# relations.  7 test triples -> 14 queries.  (a likes ?) has answers b, c, d, e across splits;
# (a likes c) is also in train (a duplicate across splits); (? likes c) has answers a, b, g.
SPLITS = {
    "train": [("a", "likes", "b"), ("a", "likes", "c"), ("b", "likes", "c"), ("c", "knows", "d"),
              ("d", "knows", "e"), ("e", "likes", "a"), ("f", "knows", "a"), ("b", "knows", "f"),
              ("g", "likes", "b")],
    "valid": [("a", "likes", "d"), ("e", "knows", "c"), ("g", "likes", "c")],
    "test": [("a", "likes", "e"), ("a", "likes", "c"), ("b", "likes", "c"), ("g", "likes", "c"),
             ("d", "knows", "e"), ("f", "knows", "d"), ("h", "knows", "a")],
}
