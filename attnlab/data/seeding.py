"""Per-example random generators: one deterministic stream per (seed, index).

Every synthetic example and every random training window is a pure function of
an integer seed and the example's integer index, so a grain `MapDataset` of
index -> example is reproducible, shardable and checkpointable by its index alone.
"""

from __future__ import annotations

import zlib

import numpy as np


def example_rng(seed: int, index: int) -> np.random.Generator:
  """Returns the numpy Generator for example `index` of the stream `seed`.

  Uses `np.random.SeedSequence([seed, index])` (numpy's default PCG64), so
  streams for different indices are statistically independent and the result
  does not depend on the order in which examples are produced.
  """
  if seed < 0 or index < 0:
    raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def derive_seed(seed: int, name: str) -> int:
  """Returns a non-negative 32-bit seed derived from `seed` and a stream `name`.

  Used to give train and eval data (or different tasks) disjoint streams from a
  single `config.seed`: `derive_seed(s, "train") != derive_seed(s, "eval")`.
  """
  entropy = np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8"))])
  return int(entropy.generate_state(1, dtype=np.uint32)[0])
