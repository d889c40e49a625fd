"""Weight penalties on the entity rows a batch uses, as per-example pure functions.

``n3``: the weighted nuclear 3-norm of Lacroix et al. (ICML 2018), ``sum_d |e_h|^3 + |e_t|^3``
per query, the standard regulariser of kbc and LibKGE; ``l2``: ``sum_d e_h^2 + e_t^2``.  Each
query penalises the rows of its own head and tail, so an entity is penalised as often as it
is trained (the frequency weighting that makes N3 work on skewed graphs).  DURA (Zhang et al.
2020) is defined for bilinear models and has no form for the distance models here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Array = jax.Array
POWERS = {"n3": 3, "l2": 2}
REGULARIZERS = ("none",) + tuple(POWERS)


def penalty_terms(name: str, heads: ArrayLike, tails: ArrayLike) -> Array:
  """Per-query penalties ``[B]`` of the head rows ``[B, d]`` and tail rows ``[B, d]``:
  ``sum_d |heads|^p + |tails|^p`` with ``p`` 3 (``n3``) or 2 (``l2``); zeros for ``none``."""
  heads, tails = jnp.asarray(heads), jnp.asarray(tails)
  if heads.ndim != 2 or heads.shape != tails.shape:
    raise ValueError(f"heads and tails must both be [B, d], got {heads.shape} and {tails.shape}")
  if name == "none":
    return jnp.zeros(heads.shape[:1], heads.dtype)
  if name not in POWERS:
    raise ValueError(f"unknown regularizer {name!r}; choose one of {', '.join(REGULARIZERS)}")
  p = POWERS[name]
  return jnp.sum(jnp.abs(heads) ** p + jnp.abs(tails) ** p, axis=-1)


def dropout(key: ArrayLike, x: ArrayLike, rate: float) -> Array:
  """``x`` with each element zeroed with probability ``rate`` and the rest divided by
  ``1 - rate`` (inverted dropout: the expectation is ``x``); ``x`` itself when ``rate`` is 0."""
  x = jnp.asarray(x)
  if rate == 0:
    return x
  if not 0 < rate < 1:
    raise ValueError(f"the dropout rate must lie in [0, 1), got {rate}")
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))
