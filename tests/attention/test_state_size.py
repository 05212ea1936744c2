"""Decode-state sizes (`attention.state_size`): each declared formula equals the float count
of the cache the variant's own decode form allocates (eval_shape of init(decode=True): no
compile), at two hyperparameter settings; every decode variant whose cache does not grow
with T declares a bounded formula; an off-by-one formula fails the same check."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from attnlab.attention import VARIANTS, build
from attnlab.attention.registry import state_size
from attnlab.attention.state_size import StateSize, linear_state, short_conv_state
from attnlab.attention.variants.linear import linear_state_size

BATCH, D_MODEL = 2, 32

# A second setting per variant that moves the terms of its formula.
SECOND = {
    "linear": dict(num_heads=2, normalize=False),
    "performer": dict(num_features=16, num_heads=2),
    "cosformer": dict(num_heads=2, head_dim=12),
    "based": dict(feature_dim=4, window=8, num_heads=2),
    "retention": dict(value_factor=1, num_heads=2),
    "lightning": dict(num_heads=2, head_dim=6),
    "gla": dict(expand_k=1.0, expand_v=2.0),
    "deltanet": dict(num_heads=2, head_dim=12),
    "gated_deltanet": dict(num_heads=2, head_dim=12),
    "mala": dict(num_heads=2, head_dim=12),
    "mega": dict(chunk_size=0, ema_dim=4, z_dim=8, v_dim=24),
    "sliding_window": dict(window=8, num_kv_heads=2),
    "sink_window": dict(window=8, num_sinks=2),
    "mha": dict(num_heads=2),
    "mqa": dict(head_dim=16),
    "gqa": dict(num_heads=8, num_kv_heads=4),
}
DECLARED = sorted(n for n, s in VARIANTS.items() if s.state_size_fn is not None)


def cache_floats(name: str, seq_len: int, **hp) -> int:
  """Floats per sequence in the "cache" collection that init(decode=True) allocates."""
  module = build(name, **hp)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((BATCH, seq_len, D_MODEL)),
                                              decode=True))
  total = sum(leaf.size for leaf in jax.tree.leaves(shapes.get("cache", {}))
              if jnp.issubdtype(leaf.dtype, jnp.floating))
  assert total % BATCH == 0, (name, total)
  return total // BATCH


def mismatch(name: str, formula, seq_len: int, **hp) -> str | None:
  """None when `formula(cfg, d_model)` at seq_len equals the cache's float count, else why."""
  size = formula(VARIANTS.get(name).make_config(**hp), D_MODEL)
  measured = cache_floats(name, seq_len, **hp)
  if size.at(seq_len) != measured:
    return f"{name} {hp}: formula {size} ({size.counted}) = {size.at(seq_len)}, cache holds {measured}"
  return None


def test_every_recurrent_variant_is_declared():
  assert set(SECOND) == set(DECLARED), "each declared variant needs a second setting here"
  for name in ("linear", "performer", "cosformer", "based", "retention", "lightning", "gla",
               "deltanet", "gated_deltanet", "mala", "mega"):
    assert state_size(name, D_MODEL).bounded, name


@pytest.mark.parametrize("name", DECLARED)
def test_formula_equals_decode_cache(name):
  formula = VARIANTS.get(name).state_size_fn
  for hp in ({}, SECOND[name]):
    size = formula(VARIANTS.get(name).make_config(**hp), D_MODEL)
    for seq_len in ((16,) if size.bounded else (16, 24)):
      assert mismatch(name, formula, seq_len, **hp) is None


def test_undeclared_decode_variants_grow_with_t():
  """A decode variant without a formula keeps a cache that grows with T (a KV cache), so
  no bounded state was left undeclared."""
  for name, spec in VARIANTS.items():
    if "decode" in spec.patterns and spec.state_size_fn is None:
      assert cache_floats(name, 24) > cache_floats(name, 16), f"{name}: bounded decode state, declare state_size"


def test_off_by_one_formula_fails():
  """The canary: linear attention's formula without its normaliser is caught."""
  def forgot_normaliser(cfg, d_model):
    right = linear_state_size(cfg, d_model)
    return StateSize(right.fixed - cfg.num_heads * (d_model // cfg.num_heads))
  assert mismatch("linear", forgot_normaliser, 16) is not None
  assert mismatch("linear", lambda cfg, d: StateSize(linear_state_size(cfg, d).fixed + 1), 16) is not None
  assert mismatch("linear", linear_state_size, 16) is None


def test_api_and_list():
  s = state_size("linear", 256)  # 4 heads of 64: S 4x64x64 + z 4x64
  assert s == linear_state(4, 64, 64, normalizer=True) and s.fixed == 4 * 64 * 65 and str(s) == "16640"
  mha = state_size("mha", 256)
  assert not mha.bounded and str(mha) == "512·T" and mha.at(10) == 5120
  no_decode = next(n for n, sp in VARIANTS.items() if "decode" not in sp.patterns)
  assert state_size(no_decode, 256) is None
  notes = {n: s.state_note(256) for n, s in VARIANTS.items()}
  assert notes["linear"] == "16640" and notes["bigbird"] == "- (grows with T: KV cache)"
  assert any(v.startswith("- (no decode") for v in notes.values())
  with pytest.raises(ValueError, match="no 'decode' pattern"):
    from attnlab.attention.registry import register
    from attnlab.attention.variants.linear import LinearConfig
    register("_bad", family="x", config=LinearConfig, patterns=("causal-self",), cost=("T", "T"),
             state_size=linear_state_size)


def test_short_conv_state_equals_its_cache():
  """The backbone's short convolution keeps kernel_size - 1 inputs (beside the variant's state)."""
  from attnlab.models.layers import ShortConv
  for k in (2, 4):
    shapes = jax.eval_shape(lambda: ShortConv(k).init(jax.random.key(0), jnp.zeros((BATCH, 8, D_MODEL)), decode=True))
    floats = sum(leaf.size for leaf in jax.tree.leaves(shapes["cache"])) // BATCH
    assert short_conv_state(k, D_MODEL).fixed == floats == (k - 1) * D_MODEL
