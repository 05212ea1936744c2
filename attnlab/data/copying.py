"""Copying tasks: plain copy and selective copy (Gu & Dao, 2023, "Mamba").

Token conventions shared by both: 0 is the pad / blank (noise) token, 1 is the
separator / marker token, data tokens are drawn uniformly from [2, vocab_size).
Both examples are next-token style: a full sequence S of length seq_len + 1 is
built, `inputs = S[:-1]`, `targets = S[1:]`, and `weights` is 1 exactly where
the target is a token that has to be reproduced.
"""

from __future__ import annotations

import numpy as np

from attnlab.data.seeding import example_rng

PAD = 0
BLANK = 0
SEP = 1
MARKER = 1
FIRST_DATA_TOKEN = 2


def check_copy_args(*, vocab_size: int, seq_len: int, num_tokens: int, task: str = "copy") -> None:
  """Raises a one-line ValueError unless 2 * num_tokens <= seq_len and vocab_size >= 3."""
  if vocab_size < FIRST_DATA_TOKEN + 1:
    raise ValueError(f"{task}: vocab_size must be >= 3 (pad, separator, >= 1 data token), got {vocab_size}")
  if num_tokens < 1:
    raise ValueError(f"{task}: num_tokens must be >= 1, got {num_tokens}")
  if 2 * num_tokens > seq_len:
    raise ValueError(f"{task}: seq_len={seq_len} is too short to copy num_tokens={num_tokens}; "
                     f"need seq_len >= 2 * num_tokens = {2 * num_tokens}")


def copy(seed: int, index: int, *, vocab_size: int = 16, seq_len: int = 256,
         num_tokens: int | None = None) -> dict[str, np.ndarray]:
  """Returns copy example `index` of stream `seed`.

  S = [x_1 .. x_n, SEP, x_1 .. x_n, PAD ...] (length seq_len + 1, n = num_tokens,
  default seq_len // 2). Returns `inputs`, `targets` int32 [seq_len] and `weights`
  float32 [seq_len], 1.0 on the n positions whose target is a copied token
  (input positions n .. 2n - 1, i.e. from the separator on).
  """
  n = seq_len // 2 if num_tokens is None else num_tokens
  check_copy_args(vocab_size=vocab_size, seq_len=seq_len, num_tokens=n, task="copy")
  rng = example_rng(seed, index)
  tokens = rng.integers(FIRST_DATA_TOKEN, vocab_size, size=n, dtype=np.int32)
  seq = np.full(seq_len + 1, PAD, dtype=np.int32)
  seq[:n] = tokens
  seq[n] = SEP
  seq[n + 1:2 * n + 1] = tokens
  weights = np.zeros(seq_len, dtype=np.float32)
  weights[n:2 * n] = 1.0
  return {"inputs": seq[:-1].copy(), "targets": seq[1:].copy(), "weights": weights}


def selective_copy(seed: int, index: int, *, vocab_size: int = 16, seq_len: int = 4112,
                   num_tokens: int = 16) -> dict[str, np.ndarray]:
  """Returns selective-copy example `index` of stream `seed` (Gu & Dao 2023, Mamba, sec. 3.1).

  The first L = seq_len - num_tokens positions hold n = num_tokens data tokens at
  random positions (sorted, order kept) among BLANK tokens; then a MARKER, after
  which the model must emit the n data tokens in order:
  S = [context (L), MARKER, x_1 .. x_n] (length seq_len + 1). Returns `inputs`,
  `targets` int32 [seq_len] and `weights` float32 [seq_len], 1.0 on the last n
  positions (the MARKER and x_1 .. x_{n-1} as inputs, x_1 .. x_n as targets).
  Mamba's setting is vocab 16, 16 tokens, context 4096 (seq_len 4112).
  """
  check_copy_args(vocab_size=vocab_size, seq_len=seq_len, num_tokens=num_tokens,
                  task="selective_copy")
  rng = example_rng(seed, index)
  context = seq_len - num_tokens
  tokens = rng.integers(FIRST_DATA_TOKEN, vocab_size, size=num_tokens, dtype=np.int32)
  positions = np.sort(rng.choice(context, size=num_tokens, replace=False))
  seq = np.full(seq_len + 1, BLANK, dtype=np.int32)
  seq[positions] = tokens
  seq[context] = MARKER
  seq[context + 1:] = tokens
  weights = np.zeros(seq_len, dtype=np.float32)
  weights[context:] = 1.0
  return {"inputs": seq[:-1].copy(), "targets": seq[1:].copy(), "weights": weights}
