"""The comparison training strategies of paper §4.1.2 (and Table 5's "HA + ...") as pure losses.

Every loss maps triple *scores* (higher = more plausible) to a scalar, is jittable, vmappable
and differentiable, and is free of NaN in value and gradient for every finite input (it uses
``softplus`` / ``log_sigmoid`` / ``logsumexp``, never ``log(sigmoid(.))``).

- ``samneg_loss``   SamNeg, uniform negative sampling with binary cross-entropy (KGEmb, [5]).
- ``advneg_loss``   AdvNeg, RotatE's self-adversarial negative sampling ([22]).
- ``allneg_loss``   AllNeg, 1-vs-all softmax cross-entropy over every entity (Eq. 2, [9]).
- ``nonneg_loss``   NonNeg, square loss on positives plus a global entity regulariser (Eq. 3,
                    §4.1.2's "general NonNeg strategy").

Scores.  The models of ``hale_jax.models`` give a scaled squared distance
``x = c_r * ||Phi(e, r) - e'||^2 >= 0``.  ``scores_from_scaled(x, "identity")`` is the plain
score ``-x`` (the baselines as in §4.1.2) and ``scores_from_scaled(x, h)`` the hardness-aware
score ``-h(x)`` (Eq. 8; the default, as everywhere in the library, is Hanon), so Table 5's
"HA + SamNeg" is ``samneg_loss`` fed ``scores_from_scaled(x, h)`` and "HA + AllNeg" is
``allneg_loss`` fed the same.  Nothing else changes between the two.

Margins.  KGEmb's constant bias and RotatE's ``gamma`` turn a distance into a logit
``gamma - distance``.  ``samneg_loss`` and ``advneg_loss`` take ``margin`` (default 0) and use
``score + margin`` as the logit; pass ``margin=0`` when the scores already include it.  The
margin matters for the sigmoid losses: scores ``-x`` or ``-h(x)`` are ``<= 0``, so without a
margin a positive's probability never exceeds 1/2.  It is irrelevant to the softmax losses
(``allneg_loss``, and the weights of ``advneg_loss``), which are shift-invariant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hale_jax import activations

Array = jax.Array


def scores_from_scaled(scaled: ArrayLike,
                       activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION
                       ) -> Array:
  """Triple scores from scaled squared distances: ``-h(x)``.

  Args:
    scaled: any shape, ``x = c_r * ||Phi(e, r) - e'||^2``.
    activation: ``h``, a name or a callable (``hale_jax.losses``); default (and ``None``) Hanon
      with the paper's beta and gamma; ``"identity"`` gives the plain negative distance ``-x``
      used by the non-HA baselines.

  Returns:
    Scores of the same shape as ``scaled``.
  """
  return -activations.resolve(activation)(jnp.asarray(scaled))


def samneg_loss(pos_score: ArrayLike, neg_score: ArrayLike, margin: float = 0.0) -> Array:
  """SamNeg: binary cross-entropy over one positive and ``m`` uniform negatives per triple.

  Averaging follows KGEmb (Chami et al. 2020, the paper's reference [5] for SamNeg), which
  concatenates the ``B`` positive and ``B * m`` negative terms and takes one mean::

      L = ( sum_b softplus(-(s_b^+ + margin)) + sum_{b,j} softplus(s_{b,j}^- + margin) )
          / (B + B * m)

  (``softplus(-z) = -log sigmoid(z)`` and ``softplus(z) = -log sigmoid(-z)``).  Each negative
  thus weighs as much as each positive, and the positives' share of the loss is ``1 / (1 + m)``.
  This is *not* ``mean_b[softplus(-s^+) + mean_j softplus(s^-)]`` (RotatE's averaging, which
  balances the two halves); that one is ``advneg_loss`` with ``temperature=0`` times 2.

  Args:
    pos_score: ``[B]``, scores of the positive triples.
    neg_score: ``[B, m]``, scores of each positive's ``m`` corrupted triples.
    margin: added to every score before the sigmoid (KGEmb's constant bias ``gamma``); leave
      at 0 when the scores already contain it.

  Returns:
    The scalar loss.
  """
  pos = jnp.asarray(pos_score) + margin
  neg = jnp.asarray(neg_score) + margin
  total = jnp.sum(jax.nn.softplus(-pos)) + jnp.sum(jax.nn.softplus(neg))
  return total / (pos.size + neg.size)


def advneg_loss(pos_score: ArrayLike, neg_score: ArrayLike, temperature: float | ArrayLike = 1.0,
                margin: float = 0.0) -> Array:
  """AdvNeg: RotatE's self-adversarial negative sampling (Sun et al. 2019, reference [22]).

  With logits ``z = score + margin`` and weights ``w_{b,j} = softmax_j(temperature * z_{b,j}^-)``
  held constant (``stop_gradient``, as RotatE's ``.detach()``)::

      L = ( mean_b[-log sigmoid(z_b^+)] + mean_b[-sum_j w_{b,j} log sigmoid(-z_{b,j}^-)] ) / 2

  The final ``/ 2`` is RotatE's (``loss = (positive_sample_loss + negative_sample_loss) / 2``);
  it only rescales the loss.  RotatE's optional subsampling weights (``uni_weight=False``) and
  L3 regularisation are not included.  The weights are shift-invariant, so ``margin`` changes
  only the sigmoid terms.  ``temperature = 0`` gives uniform weights ``1 / m``.

  Args:
    pos_score: ``[B]``, scores of the positive triples (RotatE: ``gamma - distance``).
    neg_score: ``[B, m]``, scores of each positive's ``m`` corrupted triples.
    temperature: RotatE's adversarial temperature ``alpha`` (its default 1.0); may be a traced
      scalar.  It multiplies the margin-shifted scores inside the softmax.
    margin: RotatE's ``gamma``, added to every score; leave at 0 when the scores contain it.

  Returns:
    The scalar loss.
  """
  pos = jnp.asarray(pos_score) + margin
  neg = jnp.asarray(neg_score) + margin
  weights = jax.lax.stop_gradient(jax.nn.softmax(temperature * neg, axis=-1))
  pos_loss = -jnp.mean(jax.nn.log_sigmoid(pos))
  neg_loss = -jnp.mean(jnp.sum(weights * jax.nn.log_sigmoid(-neg), axis=-1))
  return 0.5 * (pos_loss + neg_loss)


def allneg_loss(scores: ArrayLike, targets: ArrayLike) -> Array:
  """AllNeg: 1-vs-all softmax cross-entropy over every entity (paper Eq. 2), batch mean::

      L = mean_b[ LSE_i(s_{b,i}) - s_{b,t_b} ]

  The target is in the softmax's denominator, as in Eq. 2.

  Args:
    scores: ``[B, N]``, the score of each query against every entity.
    targets: ``[B]`` integer ids in ``[0, N)`` of the true entity of each query (not checked).

  Returns:
    The scalar loss.
  """
  s = jnp.asarray(scores)
  target_score = jnp.take_along_axis(s, jnp.asarray(targets)[:, None], axis=-1)[:, 0]
  return jnp.mean(jax.nn.logsumexp(s, axis=-1) - target_score)


def entity_spread_penalty(entity: ArrayLike) -> Array:
  """``mean_i (||e_i - c||^2 - 1)^2`` with ``c = mean_i e_i``; ``entity [N, d]`` -> scalar.

  Zero exactly when every entity lies at distance 1 from the centroid of the entity matrix.
  The centroid is a function of ``entity`` and gradients flow through it.
  """
  e = jnp.asarray(entity)
  centred = e - jnp.mean(e, axis=0, keepdims=True)
  gap = jnp.sum(centred * centred, axis=-1) - 1.0
  return jnp.mean(gap * gap)


def nonneg_loss(pos_score: ArrayLike, entity: ArrayLike, reg_weight: float) -> Array:
  """NonNeg: a square loss on positives plus a global entity regulariser (Eq. 3, §4.1.2)::

      L = mean_b (s_b^+)^2  +  reg_weight * mean_i (||e_i - c||^2 - 1)^2

  with ``c`` the centre (row mean) of the whole entity matrix.

  Reading of §4.1.2 ("a square loss to maximize positive triple scores and a global
  regularization to constrain the distance between each entity vector and the center vector of
  entity matrix"), which gives no formula:

  - Square loss.  Scores here are ``-x`` or ``-h(x)`` (negative distances), whose maximum is 0,
    so the square loss pulls each positive score to 0: ``mean(h(x^+)^2)``, exactly HaLE's
    PosSquare alignment term (which is how Eq. 4 derives HaLE from NonNeg + AllNeg).
  - Regulariser.  Eq. 3's ``g(E)`` stands in for the missing negatives (§3.1: NonNeg "utilizes
    the embedding regularization to achieve a global uniformity").  A penalty that only pulls
    entities toward the centre agrees with the alignment term and collapses every entity to one
    point; one that only pushes them away is unbounded below.  So it *constrains* the distance,
    as the text says, to a unit radius: entities closer than 1 are pushed out, farther ones
    pulled in.  It does not make the angular distribution uniform, consistent with the paper
    finding NonNeg's constraint too weak (§4.2.3, Fig. 3).

  Args:
    pos_score: ``[B]``, scores of the positive triples.
    entity: ``[N, d]``, the full entity matrix (the regulariser is global, not per batch).
    reg_weight: weight of the regulariser.

  Returns:
    The scalar loss.
  """
  pos = jnp.asarray(pos_score)
  return jnp.mean(pos * pos) + reg_weight * entity_spread_penalty(entity)
