"""The HaLE query-sampling loss (paper Eq. 9, typos fixed) as a pure function.

    L = lam * mean_b h(x_b^+)^2  +  mean_j LSE_i( -h(x_{j,i}) )

with ``x = c_r * ||Phi(e, r) - e'||^2`` (scaled squared distance) and ``h`` a hardness-aware
activation.  The first term (alignment) runs over all ``B`` positive triples of the batch.  The
second term (uniformity) runs over ``k = ceil(alpha * B)`` sampled queries and takes a
log-sum-exp over *all* ``N`` entities (the query's own target included, as in Eq. 4).

Eq. 9 as printed has a leading minus and ``1 / n_T^2``; both are typos.  The alignment term
must be minimised with a plus sign (it is ``-lambda/n_T sum f`` with ``f = -h(.)`` in Eq. 5), and
the uniformity term is averaged over the sampled queries (``1 / n_T_hat``).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Array = jax.Array


def num_sampled_queries(batch_size: int, alpha: float) -> int:
  """``k = ceil(alpha * batch_size)``, at least 1 and at most ``batch_size``."""
  if not 0.0 < alpha <= 1.0:
    raise ValueError(f"the sampling proportion alpha must lie in (0, 1], got {alpha}")
  return max(1, min(batch_size, math.ceil(alpha * batch_size - 1e-9)))


def hale_loss(pos_scaled: ArrayLike, sampled_scaled: ArrayLike,
              activation: Callable[[ArrayLike], Array], lam: float,
              pos_square: bool = True) -> Array:
  """HaLE loss from scaled squared distances.

  Args:
    pos_scaled: ``[B]``, ``c_r * ||Phi(e, r) - e_p||^2`` of each positive triple.
    sampled_scaled: ``[k, N]``, ``c_r * ||Phi(e, r) - e_i||^2`` of each sampled query against
      every entity.
    activation: elementwise ``h``, e.g. ``activations.get_activation("hanon")``.
    lam: the alignment weight lambda.
    pos_square: square the activated positive scores (HaLE); ``False`` gives Table 5's
      "w/o PosSquare" ablation, ``lam * mean h(x+)``.

  Returns:
    The scalar loss.
  """
  pos = activation(jnp.asarray(pos_scaled))
  alignment = jnp.mean(pos * pos if pos_square else pos)
  uniformity = jnp.mean(jax.nn.logsumexp(-activation(jnp.asarray(sampled_scaled)), axis=-1))
  return lam * alignment + uniformity
