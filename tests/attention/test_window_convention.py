"""One meaning of "window" in every variant that has one (issue 9, item 6).

A window of w holds exactly w keys, the query's own position included (the convention of
flash-linear-attention and Mistral): query t sees keys t - w + 1 .. t when causal and,
non-causal, the centred t - floor(w/2) .. t + w - 1 - floor(w/2) (NATTEN's and
Longformer's split; clipped at the sequence ends). The check is behavioural: the gradient of the output at
query t with respect to the inputs is nonzero exactly at the positions the window admits
(each variant configured so that its non-window parts, sinks, globals, random blocks,
the linear branch, are off). A canary built with window w + 1 must fail the same check.

Hyperparameters that are not sliding windows keep their own names and meanings:
`routing`'s window (members per centroid), block_local's / mega's / moba's blocks
and chunks (partitions), strided's stride (the Sparse Transformer's A(1) of l + 1 keys).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import VARIANTS, build
from attnlab.attention.variants.base import window_extents
from tests.attention import contract

T, D_MODEL, W = 12, 16, 5  # W = 5: the canary (6) adds a distance (5, or 3 non-causal) no power of two covers

# name -> (hyperparameters for a window of w with every non-window part switched off,
#          keys allowed outside the window (distance d = t - s) or None)
WINDOWED = {
    "sliding_window": (lambda w: dict(window=w), None),
    "sink_window": (lambda w: dict(window=w, num_sinks=0), None),
    "duo": (lambda w: dict(window=w, num_sinks=0, alpha_init=0.0), None),  # streaming half only
    "based": (lambda w: dict(window=w, feature_dim=4, chunk_size=4), None),  # linear branch zeroed below
    "longformer": (lambda w: dict(window=w, num_global=0, block_size=4), None),
    "dilated_window": (lambda w: dict(window=w, dilations=(1,)), None),
    "bigbird": (lambda w: dict(window_blocks=w, block_size=1, num_global_blocks=0, num_random_blocks=0), None),
    "s2_attention": (lambda w: dict(local_blocks=w, block_size=1, vert_stride=1000, homo_head=True), None),
    # PowerAttention adds the power-of-two distances to its window by definition.
    "power_attention": (lambda w: dict(window=w), lambda d: (d > 0) & ((d & (d - 1)) == 0)),
    "neighborhood": (lambda w: dict(window=w), None),  # 1-D; shifts at the borders (see expected)
}
# NATTEN's neighbourhood keeps w keys at the sequence ends by shifting the window inward
# (its paper's definition); elsewhere it is the same centred window.
SHIFTED_AT_BORDERS = ("neighborhood",)
WINDOW_FIELDS = ("window", "window_blocks", "local_blocks")
NOT_SLIDING = {
    "routing": "window = queries and keys each centroid takes (its top-w); local_window is a sliding window",
    "window": "Swin's window = the side of non-overlapping partitions",
    "shifted_window": "Swin's window = the side of non-overlapping (shifted) partitions",
    "aggregated": "window = its fine sliding window, but its pooled coarse keys reach every token "
                  "(the fine window is checked by its oracle in test_zoo3_b)",
}


def expected(w, causal, extra=None, shifted=False):
  """bool [T, T]: query t may depend on input s (a window of w keys, its own included;
  `shifted`: a non-causal window moved inward at the ends so it always holds w keys)."""
  t, s = np.arange(T)[:, None], np.arange(T)[None, :]
  d = t - s
  before, after = (w - 1, 0) if causal else (w // 2, w - 1 - w // 2)
  ok = (d >= -after) & (d <= before)
  if shifted and not causal:
    start = np.clip(t - w // 2, 0, T - w)
    ok = (s >= start) & (s < start + w)
  if extra is not None:
    ok |= extra(d if causal else np.abs(d)) & ((d >= 0) | (not causal))
  return ok


def dependency(name, hp, causal):
  """bool [T, T]: |d y_t / d x_s| > 0, from one vjp per query (batched), random params."""
  module = build(name, num_heads=2, causal=causal, **hp)
  x = jax.random.normal(jax.random.key(0), (1, T, D_MODEL), jnp.float32)
  variables = contract.init_variables(module, x, seed=1)
  if name == "based":  # zero the linear branch's values: y_lin == 0 and so is its gradient
    params = dict(variables["params"])
    params["value"] = jax.tree.map(jnp.zeros_like, params["value"])
    variables = {**variables, "params": params}
  y, vjp = jax.vjp(jax.jit(lambda x: module.apply(variables, x)), x)
  r = jax.random.normal(jax.random.key(2), y.shape[1:])  # [T, d]: a generic direction per query
  cot = jnp.eye(T)[:, None, :, None] * r[None, None]  # [T (query), 1, T, d]
  (g,) = jax.jit(jax.vmap(vjp))(cot)  # [T (query), 1, T (input), d]
  mag = np.abs(np.asarray(g[:, 0])).max(-1)
  return mag > 1e-6 * mag.max()


def cases():
  out = []
  for name in WINDOWED:
    for causal in (True, False):
      if ("causal-self" if causal else "noncausal-self") in VARIANTS.get(name).patterns:
        out.append(pytest.param(name, causal, id=f"{name}-{'causal' if causal else 'noncausal'}"))
  return out


@pytest.mark.parametrize("name,causal", cases())
def test_window_sees_exactly_w_keys(name, causal):
  make, extra = WINDOWED[name]
  shifted = name in SHIFTED_AT_BORDERS
  want = expected(W, causal, extra, shifted)
  got = dependency(name, make(W), causal)
  np.testing.assert_array_equal(got, want, err_msg=f"{name}: window {W} does not see exactly its {W} keys")
  # Canary: the same variant with one key more (window w + 1) fails the check for w.
  canary = dependency(name, make(W + 1), causal)
  assert not np.array_equal(canary, want), f"{name}: a window of {W + 1} passed the check for {W}"
  np.testing.assert_array_equal(canary, expected(W + 1, causal, extra, shifted))


def test_every_windowed_variant_is_checked():
  """A variant with a window-like hyperparameter is either in WINDOWED or documented as
  not a sliding window, so a new windowed variant cannot skip the convention test."""
  for name, spec in VARIANTS.items():
    fields = {f.name for f in dataclasses.fields(spec.config)}
    if fields & set(WINDOW_FIELDS):
      assert name in WINDOWED or name in NOT_SLIDING, f"{name} has a window hyperparameter but no window test"


def test_window_extents():
  assert window_extents(1, True) == (0, 0)  # itself only
  assert window_extents(4, True) == (3, 0)
  assert window_extents(4, False) == (2, 1)  # NATTEN's split for an even window
  assert window_extents(5, False) == (2, 2)
  for bad in (0, -2, 2.5):
    with pytest.raises(ValueError, match="window must be a positive integer"):
      window_extents(bad, True)


@pytest.mark.parametrize("name,hp", [("sliding_window", dict(window=0)), ("sink_window", dict(window=0)),
                                     ("longformer", dict(window=0)), ("bigbird", dict(window_blocks=0))])
def test_empty_window_raises(name, hp):
  x = jnp.zeros((1, 8, D_MODEL))
  with pytest.raises(ValueError, match=r"window\w* must be"):
    build(name, num_heads=2, **hp).init(jax.random.key(0), x)
