"""The public API a JAX user touches: activations by name or object under jit/grad/vmap, the
shape checks of ``hale_loss``, one meaning of ``activation=None``, deprecated and removed
names, and a light ``import hale_jax``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hale_jax
from hale_jax import activations, baselines, chunked, config, losses, models, rundir
from reference import (np_activation, np_dactivation, np_hale_loss, np_two_arctanh,
                       random_params, seeded_rng)

REPO = Path(__file__).resolve().parents[1]
B, K, N = 9, 3, 14


def _inputs(rng, b=B, k=K, n=N):
  return rng.uniform(0.0, 2.5, b), rng.uniform(0.0, 2.5, (k, n))


class ActivationArgumentTest(chex.TestCase):
  """``hale_loss`` with ``activation`` an object, a name or a callable, with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_activation_object_needs_no_closure(self):
    rng = seeded_rng(self.id())
    pos, sampled = _inputs(rng)
    for name in ("halin", "xexp", "identity"):
      got = self.variant(losses.hale_loss)(jnp.asarray(pos, jnp.float32),
                                           jnp.asarray(sampled, jnp.float32),
                                           activation=activations.ACTIVATIONS[name], lam=0.6)
      want = np_hale_loss(pos, sampled, np_activation(name), 0.6)
      np.testing.assert_allclose(float(got), want, rtol=3e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_name_with_static_argnames(self):
    rng = seeded_rng(self.id())
    pos, sampled = _inputs(rng)
    fn = self.variant(losses.hale_loss, static_argnames="activation")
    got = fn(jnp.asarray(pos, jnp.float32), jnp.asarray(sampled, jnp.float32),
             activation="halin")
    np.testing.assert_allclose(float(got), np_hale_loss(pos, sampled, np_activation("halin"),
                                                        0.3), rtol=3e-6)


def test_documented_jit_calls_and_an_object_with_other_beta(rng):
  pos, sampled = _inputs(rng)
  want = np_hale_loss(pos, sampled, np_activation("halin"), 0.3)
  by_object = jax.jit(hale_jax.hale_loss)(pos, sampled, activation=hale_jax.halin)
  by_name = jax.jit(hale_jax.hale_loss, static_argnames="activation")(pos, sampled,
                                                                      activation="halin")
  np.testing.assert_allclose([float(by_object), float(by_name)], [want, want], rtol=3e-6)
  h = hale_jax.get_activation("halin", 4.0, 6.0)
  assert jax.tree_util.tree_leaves(h) == []
  np.testing.assert_allclose(float(jax.jit(hale_jax.hale_loss)(pos, sampled, activation=h)),
                             np_hale_loss(pos, sampled, np_activation("halin", 4.0, 6.0), 0.3),
                             rtol=3e-6)


def test_grad_and_vmap_take_a_name_or_an_object(rng):
  with jax.enable_x64(True):
    pos, sampled = _inputs(rng)
    h, dh = np_activation("hanon"), np_dactivation("hanon")
    # d/dpos of lam * mean h(pos)^2 is lam * 2 h h' / B
    want = 0.3 * 2.0 * h(pos) * dh(pos) / B
    for act in ("hanon", hale_jax.hanon, None):
      got = jax.grad(losses.hale_loss)(jnp.asarray(pos), jnp.asarray(sampled), activation=act)
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
    pos2, sampled2 = np.stack([pos, pos[::-1]]), np.stack([sampled, sampled[::-1]])
    for act in ("xexp", hale_jax.xexp):
      got = jax.vmap(losses.hale_loss, in_axes=(0, 0, None))(pos2, sampled2, act)
      want = [np_hale_loss(p, s, np_activation("xexp"), 0.3) for p, s in zip(pos2, sampled2)]
      np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)


def test_unknown_name_lists_the_valid_ones():
  with pytest.raises(ValueError, match="unknown activation 'tanh'; choose one of hanon, halin"):
    losses.hale_loss(jnp.ones(3), jnp.ones((2, 4)), activation="tanh")
  with pytest.raises(ValueError, match="two_arctanh, identity"):
    baselines.scores_from_scaled(jnp.ones(3), "Hanon")
  with pytest.raises(ValueError, match="a name .* or a callable"):
    losses.hale_loss(jnp.ones(3), jnp.ones((2, 4)), activation=3)


@pytest.mark.parametrize("pos_shape,sampled_shape,message", [
    ((3, 5), (4,), r"pos_scaled must be \[B\] .*got shape \(3, 5\)"),          # swapped
    ((4,), (5,), r"sampled_scaled must be \[k, N\] .*got shape \(5,\)"),       # 1-D sampled
    ((4, 1), (2, 5), r"pos_scaled must be \[B\] .*got shape \(4, 1\)"),        # [B, 1] pos
    ((), (2, 5), r"pos_scaled must be \[B\] .*got shape \(\)"),
])
def test_wrong_shapes_name_the_argument(pos_shape, sampled_shape, message):
  pos, sampled = jnp.ones(pos_shape), jnp.ones(sampled_shape)
  with pytest.raises(ValueError, match=message):
    losses.hale_loss(pos, sampled)
  with pytest.raises(ValueError, match=message):  # ranks are static: the same under jit
    jax.jit(losses.hale_loss)(pos, sampled, activation=hale_jax.halin)


def test_wrong_bias_shapes_name_the_argument():
  pos, sampled = jnp.ones(4), jnp.ones((2, 5))
  with pytest.raises(ValueError, match=r"pos_bias must be \[B\] = \(4,\), got shape \(5,\)"):
    losses.hale_loss(pos, sampled, pos_bias=jnp.ones(5), entity_bias=jnp.ones(5))
  with pytest.raises(ValueError, match=r"entity_bias must be \[N\] = \(5,\), got shape \(4,\)"):
    losses.hale_loss(pos, sampled, pos_bias=jnp.ones(4), entity_bias=jnp.ones(4))


def test_none_means_hanon_everywhere(rng):
  """``activation=None`` and the default are Hanon in the losses, the baselines' scores and
  the ranking of biased parameters alike."""
  pos, sampled = _inputs(rng)
  h = np_activation("hanon")
  want = np_hale_loss(pos, sampled, h, 0.3)
  for act in (None, "hanon", hale_jax.hanon):
    np.testing.assert_allclose(float(losses.hale_loss(pos, sampled, act)), want, rtol=3e-6)
  np.testing.assert_allclose(float(losses.hale_loss(pos, sampled)), want, rtol=3e-6)
  np.testing.assert_allclose(np.asarray(baselines.scores_from_scaled(sampled, None)),
                             -h(sampled), rtol=3e-6)
  np.testing.assert_allclose(np.asarray(baselines.scores_from_scaled(sampled)), -h(sampled),
                             rtol=3e-6)
  params = random_params(rng, "TransE", N, 2, 4, entity_bias="head_tail")
  q, rels = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), jnp.asarray([0, 1, 3])
  c = np.log1p(np.exp(np.asarray(params["scale"], np.float64)[np.asarray(rels)]))
  e = np.asarray(params["entity"], np.float64)
  d2 = np.sum((np.asarray(q, np.float64)[:, None] - e[None]) ** 2, -1)
  biased = h(c[:, None] * d2) - np.asarray(params["bias_tail"], np.float64)[None]
  for act in (None, "hanon"):
    np.testing.assert_allclose(np.asarray(models.ranking_distances(params, q, rels, act)),
                               biased, rtol=2e-5, atol=2e-5)
  plain = c[:, None] * d2 - np.asarray(params["bias_tail"], np.float64)[None]
  np.testing.assert_allclose(np.asarray(models.ranking_distances(params, q, rels, "identity")),
                             plain, rtol=2e-5, atol=2e-5)


def test_arctanh_is_a_deprecated_alias_of_two_arctanh(rng):
  x = rng.uniform(-0.9, 0.9, 7)
  with pytest.warns(DeprecationWarning, match="use hale_jax.two_arctanh"):
    old = hale_jax.arctanh
  with pytest.warns(DeprecationWarning, match="use hale_jax.activations.two_arctanh"):
    from hale_jax.activations import arctanh  # noqa: F401  pylint: disable=import-outside-toplevel
  assert old is hale_jax.two_arctanh
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    np.testing.assert_allclose(np.asarray(hale_jax.two_arctanh(x.astype(np.float32))),
                               np_two_arctanh(x), rtol=2e-6)
    # the earlier --activation value: accepted by name, quietly (flagfiles, run.json)
    assert activations.get_activation("arctanh") == hale_jax.two_arctanh
    cfg = config.Config.make(activation="arctanh")
  with pytest.raises(AttributeError, match="no attribute 'tanh'"):
    hale_jax.tanh  # pylint: disable=pointless-statement
  spec = {"config": cfg.flat()}
  renamed = config.Config.make(activation="two_arctanh")
  assert rundir.mismatch(spec, {"config": renamed.flat()}) == []
  assert rundir.mismatch(spec, {"config": config.Config.make(activation="hanon").flat()}) == [
      "activation ('arctanh' vs 'hanon')"]


def test_removed_name_says_what_replaced_it():
  with pytest.raises(AttributeError, match=r"hale_loss_chunked was removed in 0\.1\.0; use "
                     r"losses\.combine\(.*chunked\.uniformity_lse"):
    chunked.hale_loss_chunked  # pylint: disable=pointless-statement
  with pytest.raises(AttributeError, match="no attribute 'nothing'"):
    chunked.nothing  # pylint: disable=pointless-statement


@pytest.mark.parametrize("old, new", [("evaluation", "ranking"), ("trained", "trained_model"),
                                      ("own_data", "data_file")])
def test_renamed_module_names_its_new_home(old, new):
  module = importlib.import_module(f"hale_jax.{old}")
  public = next(n for n in dir(importlib.import_module(f"hale_jax.{new}")) if n[0].isupper())
  with pytest.raises(ImportError, match=rf"hale_jax\.{old} was renamed hale_jax\.{new} after "
                     rf"0\.1\.0: use hale_jax\.{new}\.{public}"):
    getattr(module, public)
  with pytest.raises(AttributeError):
    module.__all__  # pylint: disable=pointless-statement  (tools probe dunders)


def test_exports():
  assert hale_jax.uniformity_lse is chunked.uniformity_lse
  from hale_jax import nn, trained_model  # pylint: disable=import-outside-toplevel
  assert hale_jax.KGEmbedding is nn.KGEmbedding
  assert hale_jax.load is trained_model.load and hale_jax.TrainedModel is trained_model.TrainedModel
  assert {"load", "KGEmbedding", "hale_loss", "two_arctanh"} <= set(dir(hale_jax))


@pytest.mark.slow
def test_import_hale_jax_does_not_import_orbax():
  code = ("import hale_jax, sys; names = ' '.join(sys.modules); "
          "assert 'orbax' not in names, [m for m in sys.modules if 'orbax' in m]; "
          "hale_jax.load; assert 'orbax.checkpoint' in sys.modules")
  env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        cwd=REPO)
  assert done.returncode == 0, done.stderr[-2000:]
