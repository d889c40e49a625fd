"""The HaLE query-sampling loss (paper Eq. 9, typos fixed) as pure functions.

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
leaves the distance terms (and so ``lam``) as in Eq. 9.

The loss is not bounded below by 0: once most candidates are far (Hanon saturates at
``gamma``) each query's LSE tends to ``log(exp(-h(x^+)) + (N - 1) exp(-gamma))``, which is
negative where ``N < exp(gamma)``; compare losses between runs on the same graph only.

Inputs are *scaled squared distances* (``x >= 0``, not scores): ``pos_scaled [B]`` and
``sampled_scaled [k, N]``.  ``activation`` is a name (``"hanon"``, ``"halin"``, ...,
``hale_jax.activations.ACTIVATIONS``), an activation object (``hale_jax.halin``, or
``hale_jax.get_activation(name, beta, gamma)``) or any elementwise callable; ``None`` is
``activations.DEFAULT_ACTIVATION`` (Hanon, beta 3, gamma 10), as everywhere in the library.

Per example, as optax exposes its losses: :func:`alignment_terms` gives ``h(x_b^+)^2`` for each
positive ``[B]`` and :func:`uniformity_terms` the LSE of each sampled query ``[k]``;
:func:`combine` turns them into the scalar, and :func:`hale_loss` does all three.
"""

from __future__ import annotations

import math
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hale_jax import activations

Array = jax.Array
ActivationLike = activations.ActivationLike
DEFAULT_LAMBDA = 0.3


def num_sampled_queries(batch_size: int, alpha: float = 0.1) -> int:
  """``k = ceil(alpha * batch_size)``, at least 1 and at most ``batch_size``: how many of a
  batch's queries (the first ``k`` of a shuffled batch) the uniformity term uses."""
  if not 0.0 < alpha <= 1.0:
    raise ValueError(f"the sampling proportion alpha must lie in (0, 1], got {alpha}")
  return max(1, min(batch_size, math.ceil(alpha * batch_size - 1e-9)))


def _check_rank(name: str, x: Array, ndim: int, shape: str) -> None:
  """ValueError naming ``name`` and its expected ``shape`` unless ``x`` has rank ``ndim`` (static:
  works under ``jit``)."""
  if x.ndim != ndim:
    raise ValueError(f"{name} must be {shape} (scaled squared distances), got shape "
                     f"{tuple(x.shape)}")


def alignment_terms(pos_scaled: ArrayLike, activation: ActivationLike = activations.DEFAULT_ACTIVATION,
                    pos_square: bool = True) -> Array:
  """``h(x_b^+)^2`` (``h(x_b^+)`` without ``pos_square``) per positive: ``[B] -> [B]``.

  ``pos_scaled`` is ``c_r * ||Phi(e_h, r) - e_t||^2``; ``activation`` a name or callable
  (module docstring), default Hanon with the paper's ``beta = 3, gamma = 10``.
  """
  pos = activations.resolve(activation)(jnp.asarray(pos_scaled))
  return pos * pos if pos_square else pos


def uniformity_terms(sampled_scaled: ArrayLike,
                     activation: ActivationLike = activations.DEFAULT_ACTIVATION,
                     entity_bias: ArrayLike | None = None) -> Array:
  """``LSE_i(b_i - h(x_{j,i}))`` per sampled query: ``[k, N] -> [k]`` (``b = 0`` without
  ``entity_bias [N]``)."""
  scores = -activations.resolve(activation)(jnp.asarray(sampled_scaled))
  if entity_bias is not None:
    scores = scores + jnp.asarray(entity_bias)[None, :]
  return jax.nn.logsumexp(scores, axis=-1)


def combine(alignment: ArrayLike, uniformity: ArrayLike, lam: float = DEFAULT_LAMBDA,
            pos_bias: ArrayLike | None = None) -> Array:
  """The scalar loss ``lam * mean(alignment) + mean(uniformity) [- mean(pos_bias)]`` from the
  per-example terms ``alignment [B]``, ``uniformity [k]`` and the positives' tail biases
  ``pos_bias [B]`` (module docstring, "Tail biases")."""
  loss = lam * jnp.mean(jnp.asarray(alignment)) + jnp.mean(jnp.asarray(uniformity))
  if pos_bias is not None:
    loss = loss - jnp.mean(jnp.asarray(pos_bias))
  return loss


def hale_loss(pos_scaled: ArrayLike, sampled_scaled: ArrayLike,
              activation: ActivationLike = activations.DEFAULT_ACTIVATION,
              lam: float = DEFAULT_LAMBDA,
              pos_square: bool = True, pos_bias: ArrayLike | None = None,
              entity_bias: ArrayLike | None = None) -> Array:
  """HaLE loss from scaled squared distances (not scores).

  Under ``jax.jit`` an activation object passes as an ordinary argument,
  ``jax.jit(hale_loss)(pos, sampled, activation=hale_jax.halin)``; a name is a string, which
  ``jit`` must be told is static: ``jax.jit(hale_loss, static_argnames="activation")(pos,
  sampled, activation="halin")``.  ``grad`` and ``vmap`` take either.

  Args:
    pos_scaled: ``[B]``, ``c_r * ||Phi(e, r) - e_p||^2`` of each positive triple.
    sampled_scaled: ``[k, N]``, ``c_r * ||Phi(e, r) - e_i||^2`` of each sampled query against
      every entity.
    activation: a name (``"hanon"``, ``"halin"``, ``"xexp"``, ``"linear2x"``,
      ``"two_arctanh"``, ``"identity"``), an activation such as ``hale_jax.halin`` or any
      elementwise callable ``h``; default (and ``None``) Hanon with the paper's
      ``beta = 3, gamma = 10``.  An unknown name raises ValueError listing the names.
    lam: the alignment weight lambda.
    pos_square: square the activated positive scores (HaLE); ``False`` gives Table 5's
      "w/o PosSquare" ablation, ``lam * mean h(x+)``.
    pos_bias: ``[B]``, the tail bias ``b_t`` of each positive triple (module docstring); with
      ``entity_bias``, or both None (the paper's loss).
    entity_bias: ``[N]``, every entity's tail bias ``b_i``.

  Returns:
    The scalar loss.

  Raises:
    ValueError: an input of the wrong rank (e.g. the two distance arguments swapped), naming
      the argument and its expected shape; biases given alone or of the wrong shape.
  """
  pos_scaled, sampled_scaled = jnp.asarray(pos_scaled), jnp.asarray(sampled_scaled)
  _check_rank("pos_scaled", pos_scaled, 1, "[B]")
  _check_rank("sampled_scaled", sampled_scaled, 2, "[k, N]")
  check_bias_pair(pos_bias, entity_bias)
  if pos_bias is not None:
    _check_shape("pos_bias", jnp.asarray(pos_bias), pos_scaled.shape[:1], "[B]")
    _check_shape("entity_bias", jnp.asarray(entity_bias), sampled_scaled.shape[1:], "[N]")
  activation = activations.resolve(activation)
  return combine(alignment_terms(pos_scaled, activation, pos_square),
                 uniformity_terms(sampled_scaled, activation, entity_bias), lam, pos_bias)


def check_bias_pair(pos_bias: ArrayLike | None, entity_bias: ArrayLike | None) -> None:
  """Raises ValueError unless ``pos_bias`` and ``entity_bias`` are both given or both None."""
  if (pos_bias is None) != (entity_bias is None):
    raise ValueError("give both pos_bias [B] and entity_bias [N] (tail biases), or neither")


def _check_shape(name: str, x: Array, shape: tuple[int, ...], doc: str) -> None:
  if tuple(x.shape) != tuple(shape):
    raise ValueError(f"{name} must be {doc} = {tuple(shape)}, got shape {tuple(x.shape)}")
