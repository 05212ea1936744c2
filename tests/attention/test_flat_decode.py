"""Decode steps whose cost is flat in the cache length (issue 10, part 5).

The sliding-window family (sliding_window, sink_window, based's window branch) and
Mega-chunk keep a ring buffer of the keys a query can still see
(`AttentionModule.window_cache`) instead of the whole sequence; longformer's and
bigbird's global query rows (causal) read only the cache prefix they can see. Checked here:
* one decode step's FLOPs (XLA's count of the compiled step) at a 4096-slot cache stay
  within 1.5x of those at 512; the canaries are dense `mha` and `sliding_window` with
  its windowed cache switched off (the old whole-cache path), which grow ~8x;
* decoding through the ring buffer equals the full pass (1 and 3 tokens per step, the
  ring wrapping several times; sinks, ALiBi, GQA, a key-padding mask).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build
from attnlab.attention import masks as M
from attnlab.attention.variants.softmax import SlidingWindowAttention
from tests.attention import contract

FLAT = {
    "sliding_window": dict(num_heads=2, window=16),
    "sink_window": dict(num_heads=2, window=16, num_sinks=4),
    "based": dict(num_heads=2, window=16, feature_dim=4),
    "mega": dict(num_heads=1, chunk_size=16),
    # global rows: a step holding one attends only to the cache prefix before it (causal)
    "longformer": dict(num_heads=2, window=16, num_global=2, block_size=16),
    "bigbird": dict(num_heads=2, block_size=8, window_blocks=3, num_global_blocks=1, num_random_blocks=2),
}
SHORT, LONG = 512, 4096  # cache slots; attending the whole cache costs 8x more at LONG


def _growth(name, hparams):
  short, long = (contract.decode_step_flops(name, hparams, n) for n in (SHORT, LONG))
  print(f"{name}: decode step {short:.3g} FLOPs @{SHORT} -> {long:.3g} @{LONG} ({long / short:.2f}x)")
  return long / short


@pytest.mark.parametrize("name", list(FLAT))
def test_decode_step_cost_is_flat_in_the_cache(name):
  assert _growth(name, FLAT[name]) < 1.5


def test_canary_dense_decode_grows_with_the_cache():
  """mha attends to every cached key: its step grows ~8x (this is what the test above rejects)."""
  assert _growth("mha", dict(num_heads=2)) > 6.0


def test_canary_whole_cache_window_grows(monkeypatch):
  """sliding_window on the old path (the whole sequence cached) fails the flat-cost check."""
  monkeypatch.setattr(SlidingWindowAttention, "cache_window", lambda self: None)
  assert _growth("sliding_window", FLAT["sliding_window"]) > 6.0


EXACT = [  # (variant, hyperparameters, tokens per step)
    ("sliding_window", dict(num_heads=2, window=4), 1),
    ("sliding_window", dict(num_heads=2, window=4), 3),
    ("sliding_window", dict(num_heads=4, num_kv_heads=2, window=3, positional="alibi"), 3),
    ("sink_window", dict(num_heads=2, window=3, num_sinks=2), 1),
    ("sink_window", dict(num_heads=2, window=3, num_sinks=2), 3),
    ("sink_window", dict(num_heads=2, window=4, num_sinks=3, positional="alibi"), 3),
    ("based", dict(num_heads=2, window=3, feature_dim=4), 3),
    ("mega", dict(num_heads=1, chunk_size=4), 1),
    ("mega", dict(num_heads=1, chunk_size=5), 3),
    ("longformer", dict(num_heads=2, window=3, global_indices=(5, 9), block_size=4), 3),
    ("bigbird", dict(num_heads=2, block_size=4, window_blocks=2, num_global_blocks=1, num_random_blocks=2), 3),
]
_ID = lambda v: v if isinstance(v, (str, int)) else "-".join(f"{k}{v}" for k, v in v.items() if k != "num_heads")  # noqa: E731


@pytest.mark.parametrize("name,hparams,chunk", EXACT, ids=_ID)
def test_ring_buffer_decode_matches_full(name, hparams, chunk):
  """14 tokens through a ring of window-1 (or chunk-1) slots: it wraps several times;
  3-token steps straddle windows and chunk boundaries and outnumber small rings (and,
  for longformer/bigbird, mix global and local query rows)."""
  contract.check_decode_matches_full(name, hparams, length=14, chunk=chunk, jit=True)


@pytest.mark.parametrize("name,hparams", [EXACT[0][:2], EXACT[7][:2]], ids=_ID)
def test_ring_buffer_decode_with_key_padding(name, hparams):
  """A caller's KeyPadding (over absolute positions) is applied to the ring's slots exactly."""
  mask = M.KeyPadding(jnp.asarray(np.random.RandomState(0).rand(2, 13) > 0.3))
  contract.check_decode_matches_full(name, hparams, length=13, chunk=2, atol=3e-5, jit=True, mask=mask)


def test_ring_cache_size_does_not_depend_on_the_sequence():
  """The cache of sliding_window holds window-1 key slots, whatever length init saw."""
  module = build("sliding_window", **FLAT["sliding_window"], causal=True)
  for n in (64, 4096):
    x = jax.ShapeDtypeStruct((1, n, 32), jnp.float32)
    cache = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, decode=True), x)["cache"]
    assert cache["cached_key"].shape[1] == FLAT["sliding_window"]["window"] - 1


def test_cost_table_decode_exponent():
  """The cost table's "decode exponent" (`bench.cost.measure_decode`): ~0 for a windowed
  cache, ~1 for mha (the canary), "-" for a variant without decode."""
  from attnlab.bench.cost import decode_columns, measure_decode
  lengths = (1024, 4096, 16384)
  _, flat = measure_decode("sliding_window", lengths, window=64)
  _, dense = measure_decode("mha", lengths)
  print(f"decode exponent: sliding_window {flat:.2f}, mha {dense:.2f}")
  assert abs(flat) < 0.05 and dense > 0.75
  assert decode_columns("linformer", lengths) == {"decode_flops": None, "decode_exponent": None}
