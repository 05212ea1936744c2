"""Multi-query associative recall (MQAR), as in Zoology (Arora et al., 2023).

Reference: S. Arora, S. Eyuboglu, A. Timalsina, I. Johnson, M. Poli, J. Zou,
A. Rudra, C. Ré. "Zoology: Measuring and Improving Recall in Efficient Language
Models", 2023 (arXiv:2312.04927); generator `multiquery_ar` in
github.com/HazyResearch/zoology (zoology/data/associative_recall.py).

Layout of one example with `seq_len = T` and `num_kv_pairs = P`:

  positions [0, 2P):   k_1 v_1 k_2 v_2 ... k_P v_P      (the key-value context)
  positions [2P, T):   the query region; key k_i reappears at position
                       2P + 2 * g_i, with gaps g_i drawn without replacement
                       from range((T - 2P) // 2) with power-law probabilities
                       p(g) ∝ power_a * (g + 1) ** (power_a - 1).
  Other query-region positions hold token 0, or uniform random tokens from the
  whole vocabulary when `random_non_queries` (Zoology's default).

Keys are drawn without replacement from [1, V // 2) and values without
replacement from [V // 2, V) (disjoint halves; token 0 is never a key).
`targets` is next-token style: `targets[t] = inputs[t + 1]`, except at each query
position, where it is the value paired with that key. `weights` is 1 exactly at
the P query positions, so loss and accuracy count only recall.
"""

from __future__ import annotations

import functools

import numpy as np

from attnlab.data.seeding import example_rng


def check_mqar_args(*, vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float) -> None:
  """Raises a one-line ValueError if the MQAR arguments cannot make an example.

  Requirements (Zoology's, minus its unused `vocab_size > seq_len`): seq_len even,
  4 * num_kv_pairs <= seq_len (so the query region has at least P slots), enough
  distinct keys in [1, V // 2) and values in [V // 2, V), and power_a in (0, 1].
  """
  if num_kv_pairs < 1:
    raise ValueError(f"mqar: num_kv_pairs must be >= 1, got {num_kv_pairs}")
  if seq_len % 2:
    raise ValueError(f"mqar: seq_len must be even, got {seq_len}")
  if 4 * num_kv_pairs > seq_len:
    raise ValueError(
        f"mqar: seq_len={seq_len} is too short for num_kv_pairs={num_kv_pairs}; "
        f"need seq_len >= 4 * num_kv_pairs = {4 * num_kv_pairs}")
  if vocab_size // 2 - 1 < num_kv_pairs:
    raise ValueError(
        f"mqar: vocab_size={vocab_size} is too small for num_kv_pairs={num_kv_pairs}; "
        f"need vocab_size >= {2 * (num_kv_pairs + 1)} (keys from [1, V//2), values from [V//2, V))")
  if not 0.0 < power_a <= 1.0:
    raise ValueError(f"mqar: power_a must be in (0, 1], got {power_a}")


@functools.lru_cache(maxsize=64)
def mqar_gap_probs(num_slots: int, power_a: float) -> np.ndarray:
  """Returns float64 [num_slots]: Zoology's power-law distribution over query gaps.

  p(g) ∝ power_a * (g + 1) ** (power_a - 1) for g in range(num_slots); small
  `power_a` (Zoology's default 0.01) puts queries close to the context.
  """
  p = power_a * np.arange(1, num_slots + 1, dtype=np.float64) ** (power_a - 1.0)
  p = p / p.sum()
  p.flags.writeable = False  # cached: shared between calls
  return p


def sample_without_replacement(rng: np.random.Generator, p: np.ndarray, k: int) -> np.ndarray:
  """Returns int64 [k]: k distinct indices drawn one after another with probabilities ∝ p.

  Gumbel-top-k: the k largest of log p + Gumbel noise, in decreasing order, have
  the distribution of successive weighted draws without replacement (what
  `rng.choice(len(p), k, replace=False, p=p)` samples), at a fraction of the cost.
  """
  scores = np.log(p) + rng.gumbel(size=p.shape[0])
  return np.argsort(-scores, kind="stable")[:k]


def mqar(
    seed: int,
    index: int,
    *,
    vocab_size: int = 8192,
    seq_len: int = 256,
    num_kv_pairs: int = 16,
    power_a: float = 0.01,
    random_non_queries: bool = True,
) -> dict[str, np.ndarray]:
  """Returns MQAR example `index` of stream `seed` (Zoology, Arora et al. 2023).

  Returns a dict with `inputs` int32 [seq_len], `targets` int32 [seq_len]
  (the paired value at each query position, the next input token elsewhere) and
  `weights` float32 [seq_len] (1.0 at the num_kv_pairs query positions, else 0).
  Deterministic in (seed, index); see the module docstring for the layout.
  """
  check_mqar_args(vocab_size=vocab_size, seq_len=seq_len, num_kv_pairs=num_kv_pairs,
                  power_a=power_a)
  rng = example_rng(seed, index)
  half = vocab_size // 2
  keys = 1 + rng.choice(half - 1, size=num_kv_pairs, replace=False)
  values = half + rng.choice(vocab_size - half, size=num_kv_pairs, replace=False)
  context = 2 * num_kv_pairs
  num_slots = (seq_len - context) // 2
  gaps = sample_without_replacement(rng, mqar_gap_probs(num_slots, power_a), num_kv_pairs)

  inputs = np.zeros(seq_len, dtype=np.int32)
  inputs[0:context:2] = keys
  inputs[1:context:2] = values
  query_pos = context + 2 * gaps
  if random_non_queries:
    region = inputs[context:]
    region[:] = rng.integers(0, vocab_size, size=region.shape[0])
  inputs[query_pos] = keys

  targets = np.zeros(seq_len, dtype=np.int32)
  targets[:-1] = inputs[1:]
  targets[query_pos] = values
  weights = np.zeros(seq_len, dtype=np.float32)
  weights[query_pos] = 1.0
  return {"inputs": inputs, "targets": targets, "weights": weights}
