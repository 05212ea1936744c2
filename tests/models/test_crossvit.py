"""crossvit: the class-token cross-attention fusion against an independent jnp oracle (forward and
gradients), a canary that fuses with the branch's own tokens, the builder's errors, and one
training run through configs/vision.py:variant=crossvit.

The oracle is written from the paper (Chen et al. 2021, eqs. 5-8) and the official code's
f / g (LayerNorm -> GELU -> Linear): for branch i and the other branch j,
  c' = f_i(cls_i);  x' = [c'; patches_j];  y = c' + W_o softmax(q k^T / sqrt(d_h)) v,
  q = LN(x')[0] W_q, k = LN(x') W_k, v = LN(x') W_v (per head);  cls_i <- g_i(y).
It imports nothing from attnlab.models.crossvit but the module under test.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.config_loading import load_config
from attnlab.models import build_model
from attnlab.models.crossvit import ClsCrossAttention, CrossFusion, Projection
from attnlab.train import trainer

HEADS = 4


def layer_norm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def dense(x, p):
  return x @ p["kernel"] + p["bias"]


def projection(x, p):
  h = layer_norm(x, p["norm"])
  return dense(0.5 * h * (1.0 + jax.scipy.special.erf(h / math.sqrt(2.0))), p["dense"])


def cls_cross_attention(c, tokens, p):
  """c [B, 1, D], tokens [B, N, D] -> c + MCA(LN([c; tokens])) with one query (the class token)."""
  x = layer_norm(jnp.concatenate([c, tokens], axis=1), p["norm"])
  q, k, v = dense(x[:, :1], p["query"]), dense(x, p["key"]), dense(x, p["value"])
  dh = c.shape[-1] // HEADS
  heads = []
  for h in range(HEADS):
    sl = slice(h * dh, (h + 1) * dh)
    s = jnp.einsum("bqd,bkd->bqk", q[..., sl], k[..., sl]) / math.sqrt(dh)
    a = jnp.exp(s - s.max(-1, keepdims=True))
    heads.append((a / a.sum(-1, keepdims=True)) @ v[..., sl])
  return c + dense(jnp.concatenate(heads, axis=-1), p["out"])


def oracle_fusion(params, small, large, own_tokens=False):
  """(small, large) -> both with their class token replaced; own_tokens is the canary's rule."""
  xs, out = (small, large), []
  for i, name in enumerate(("small", "large")):
    own, other = xs[i], xs[1 - i]
    c = projection(own[:, :1], params[f"{name}_proj"])
    keys = projection(own[:, 1:], params[f"{name}_proj"]) if own_tokens else other[:, 1:]
    c = cls_cross_attention(c, keys, params[f"{name}_fuse"])
    out.append(jnp.concatenate([projection(c, params[f"{name}_revert"]), own[:, 1:]], axis=1))
  return tuple(out)


class OwnTokensFusion(nn.Module):
  """Canary: CrossViT's fusion with the wrong keys, the class token attending to its own
  branch's patch tokens (projected to the other width), not the other branch's."""

  @nn.compact
  def __call__(self, small, large):
    xs, out = (small, large), []
    for i, name in enumerate(("small", "large")):
      own, other = xs[i], xs[1 - i]
      proj = Projection(other.shape[-1], name=f"{name}_proj")
      c = ClsCrossAttention(HEADS, name=f"{name}_fuse")(proj(own[:, :1]), proj(own[:, 1:]))
      out.append(jnp.concatenate([Projection(own.shape[-1], name=f"{name}_revert")(c), own[:, 1:]], axis=1))
    return tuple(out)


def _setup():
  ks = jax.random.split(jax.random.PRNGKey(0), 4)
  small = jax.random.normal(ks[0], (3, 1 + 16, 48))
  large = jax.random.normal(ks[1], (3, 1 + 4, 64))
  params = nn.unbox(jax.jit(CrossFusion(HEADS).init)(ks[2], small, large))["params"]
  leaves, tree = jax.tree.flatten(params)  # random biases, norm scales and offsets, not init's 0 / 1
  noise = jax.random.split(ks[3], len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, noise)])
  return params, small, large


def _errors(apply, params, small, large):
  """(forward, gradient) max abs errors of apply(params, small, large) against the oracle."""
  cts = [jax.random.normal(jax.random.PRNGKey(7 + i), x.shape) for i, x in enumerate((small, large))]

  def loss(fn):
    return lambda p, s, l: sum(jnp.sum(o * ct) for o, ct in zip(fn(p, s, l), cts))

  got, want = jax.jit(apply)(params, small, large), jax.jit(oracle_fusion)(params, small, large)
  fwd = max(float(jnp.max(jnp.abs(g - w))) for g, w in zip(got, want))
  g_got = jax.jit(jax.grad(loss(apply), argnums=(0, 1, 2)))(params, small, large)
  g_want = jax.jit(jax.grad(loss(oracle_fusion), argnums=(0, 1, 2)))(params, small, large)
  grad = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)))
  return fwd, grad


def test_fusion_matches_oracle_forward_and_gradients():
  params, small, large = _setup()
  fwd, grad = _errors(lambda p, s, l: CrossFusion(HEADS).apply({"params": p}, s, l), params, small, large)
  assert fwd < 1e-4 and grad < 1e-3, (fwd, grad)
  out_s, _ = CrossFusion(HEADS).apply({"params": params}, small, large)
  np.testing.assert_array_equal(out_s[:, 1:], small[:, 1:])  # patch tokens pass through unchanged


def test_canary_own_tokens_fusion_fails_the_oracle():
  params, small, large = _setup()
  fwd, _ = _errors(lambda p, s, l: OwnTokensFusion().apply({"params": p}, s, l), params, small, large)
  assert fwd > 1e-2, fwd  # the check above would catch this mistake
  canary = jax.jit(OwnTokensFusion().apply)({"params": params}, small, large)
  want = jax.jit(oracle_fusion, static_argnums=3)(params, small, large, True)  # and it is the mistake we meant
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(canary, want)) < 1e-4


def _model(**crossvit):
  config = load_config("configs/vision.py:variant=crossvit", [])
  config.model.crossvit.update(crossvit)
  return build_model(config.model, "crossvit", num_classes=10, image_shape=(8, 8, 1))


def test_model_shapes_and_cross_branch_dependence():
  model = _model(blocks=1)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 10)
  p = nn.unbox(variables)["params"]
  assert p["small_pos_embed"].shape == (4, 4, 48) and p["large_pos_embed"].shape == (2, 2, 64)

  # with the large head zeroed, the logits still depend on the large branch's patch embedding
  # (only through the fusion: the small CLS reads the large patches)
  zero_head = jax.tree.map(jnp.zeros_like, p["large_head"])
  def small_logits(large_embed):
    q = {**p, "large_head": zero_head, "large_patch_embed": large_embed}
    return jnp.sum(model.apply({"params": q}, x) ** 2)
  g = jax.jit(jax.grad(small_logits))(p["large_patch_embed"])
  assert float(jnp.max(jnp.abs(g["kernel"]))) > 1e-6


def test_builder_errors():
  config = load_config("configs/vision.py:model=crossvit,variant=neighborhood", [])
  with pytest.raises(ValueError, match="non-grid attention variant"):
    build_model(config.model, "crossvit", num_classes=10, image_shape=(8, 8, 1))
  with pytest.raises(ValueError, match="must divide"):
    _model(large_patch=3)
  with pytest.raises(ValueError, match="unknown keys"):
    _model(depth=3)


def test_smoke_train_crossvit(tmp_path):
  # One multi-scale block and one eval (the smoke config has two and evaluates twice): the
  # same program pieces, half the compiling.
  config = load_config("configs/vision.py:smoke=True,variant=crossvit",
                       ["--config.model.crossvit.blocks=1", "--config.train.eval_every=6"])
  assert config.task.model == "crossvit" and config.model.variant == "mha"
  result = trainer.train(config, str(tmp_path))
  assert np.isfinite(result["eval/loss"]) and result["eval/examples"] == 359
