"""Induction-heads task (Olsson et al., 2022; the synthetic form of Gu & Dao, 2023, Mamba).

A random sequence over data tokens [2, vocab_size) contains the TRIGGER token (1)
once at a random position p, followed by a value token at p + 1; the last input
position holds TRIGGER again and its target is that value. Token 0 is unused
(reserved for padding). Only the last position is weighted.
"""

from __future__ import annotations

import numpy as np

from attnlab.data.seeding import example_rng

TRIGGER = 1
FIRST_DATA_TOKEN = 2


def check_induction_args(*, vocab_size: int, seq_len: int) -> None:
  """Raises a one-line ValueError unless vocab_size >= 3 and seq_len >= 4."""
  if vocab_size < FIRST_DATA_TOKEN + 1:
    raise ValueError(f"induction: vocab_size must be >= 3 (pad, trigger, >= 1 data token), got {vocab_size}")
  if seq_len < 4:
    raise ValueError(f"induction: seq_len must be >= 4, got {seq_len}")


def induction(seed: int, index: int, *, vocab_size: int = 16, seq_len: int = 256) -> dict[str, np.ndarray]:
  """Returns induction-heads example `index` of stream `seed`.

  inputs int32 [seq_len]: random data tokens, TRIGGER at a random p in
  [0, seq_len - 3], its value at p + 1, and TRIGGER at seq_len - 1.
  targets int32 [seq_len]: next input token, and the value at seq_len - 1.
  weights float32 [seq_len]: 1.0 only at seq_len - 1.
  """
  check_induction_args(vocab_size=vocab_size, seq_len=seq_len)
  rng = example_rng(seed, index)
  seq = rng.integers(FIRST_DATA_TOKEN, vocab_size, size=seq_len + 1, dtype=np.int32)
  p = int(rng.integers(0, seq_len - 2))
  seq[p] = TRIGGER
  seq[seq_len - 1] = TRIGGER
  seq[seq_len] = seq[p + 1]
  weights = np.zeros(seq_len, dtype=np.float32)
  weights[-1] = 1.0
  return {"inputs": seq[:-1].copy(), "targets": seq[1:].copy(), "weights": weights}
