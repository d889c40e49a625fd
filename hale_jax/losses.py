"""The HaLE query-sampling loss (paper Eq. 9, typos fixed) as a pure function.

    L = lam * mean_b h(x_b^+)^2  +  mean_j LSE_i( -h(x_{j,i}) )

with ``x = c_r * ||Phi(e, r) - e'||^2`` (scaled squared distance) and ``h`` a hardness-aware
activation.  The first term (alignment) runs over all ``B`` positive triples of the batch.  The
second term (uniformity) runs over ``k = ceil(alpha * B)`` sampled queries and takes a
log-sum-exp over *all* ``N`` entities (the query's own target included, as in Eq. 4).

Eq. 9 as printed has a leading minus and ``1 / n_T^2``; both are typos.  The alignment term
must be minimised with a plus sign (it is ``-lambda/n_T sum f`` with ``f = -h(.)`` in Eq. 5), and
the uniformity term is averaged over the sampled queries (``1 / n_T_hat``).

Tail biases (an extension, not in the paper; ``--bias=learn`` with ``--loss=hale``).  With a
learned bias ``b_i`` per entity the score of a candidate tail is ``b_i - h(x)`` (the
negative-sampling baselines' KGEmb score, whose head bias is the same for every candidate and
drops out of a tail ranking), and the loss becomes::

    L = lam * mean_b h(x_b^+)^2  -  mean_b b_{t_b}  +  mean_j LSE_i( b_i - h(x_{j,i}) )

The ``- mean b_t`` term is the positive half of a cross-entropy for the biases alone: their
gradient ``-freq_B(i) + mean_j softmax_j(i)`` vanishes when the sampled queries' softmax puts on
each entity its share of the batch's targets, so ``b`` learns a tail-popularity prior.  It
leaves the distance terms (and so ``lam``) as in Eq. 9.  Measured to lift WN18RR TransE's
Hits@1, where the plain score ranks the query's own head first (``benchmarks/RESULTS.md``).
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
              pos_square: bool = True, pos_bias: ArrayLike | None = None,
              entity_bias: ArrayLike | None = None) -> Array:
  """HaLE loss from scaled squared distances.

  Args:
    pos_scaled: ``[B]``, ``c_r * ||Phi(e, r) - e_p||^2`` of each positive triple.
    sampled_scaled: ``[k, N]``, ``c_r * ||Phi(e, r) - e_i||^2`` of each sampled query against
      every entity.
    activation: elementwise ``h``, e.g. ``activations.get_activation("hanon")``.
    lam: the alignment weight lambda.
    pos_square: square the activated positive scores (HaLE); ``False`` gives Table 5's
      "w/o PosSquare" ablation, ``lam * mean h(x+)``.
    pos_bias: ``[B]``, the tail bias ``b_t`` of each positive triple (module docstring); with
      ``entity_bias``, or both None (the paper's loss).
    entity_bias: ``[N]``, every entity's tail bias ``b_i``.

  Returns:
    The scalar loss.
  """
  check_bias_pair(pos_bias, entity_bias)
  pos = activation(jnp.asarray(pos_scaled))
  alignment = jnp.mean(pos * pos if pos_square else pos)
  scores = -activation(jnp.asarray(sampled_scaled))
  if entity_bias is not None:
    scores = scores + jnp.asarray(entity_bias)[None, :]
  uniformity = jnp.mean(jax.nn.logsumexp(scores, axis=-1))
  loss = lam * alignment + uniformity
  if pos_bias is not None:
    loss = loss - jnp.mean(jnp.asarray(pos_bias))
  return loss


def check_bias_pair(pos_bias: ArrayLike | None, entity_bias: ArrayLike | None) -> None:
  """Raises ValueError unless ``pos_bias`` and ``entity_bias`` are both given or both None."""
  if (pos_bias is None) != (entity_bias is None):
    raise ValueError("give both pos_bias [B] and entity_bias [N] (tail biases), or neither")
