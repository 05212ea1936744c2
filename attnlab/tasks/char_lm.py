"""Character / byte level language modelling on one UTF-8 text file (`char_lm`).

Training examples are random windows of seq_len + 1 tokens of the train split
(deterministic per example index); eval is the first `eval_batches` batches of
contiguous non-overlapping windows of the val split (the last `val_fraction` of
the file). Metrics add `bits_per_byte` (vocab="byte") or `bits_per_char`
(vocab="char"), both = loss / ln 2.
"""

from __future__ import annotations

import functools
from typing import Mapping

import grain
import jax.numpy as jnp
import numpy as np

from attnlab.data import pipeline, text
from attnlab.tasks import metrics as metrics_lib
from attnlab.tasks.base import Batch, TokenTask
from attnlab.tasks.registry import register_task


@register_task("char_lm")
class CharLMTask(TokenTask):
  """Next-byte / next-char prediction on `config.task.path`; every position counts."""

  DEFAULTS = {"path": "", "vocab": "byte", "seq_len": 256, "val_fraction": 0.1, "vocab_file": ""}
  HELP = {
      "path": "UTF-8 text file (e.g. ../shared/data/tinyshakespeare.txt relative to the repo root)",
      "vocab": '"byte": 256 ids = UTF-8 bytes (reports bits_per_byte); '
               '"char": the file\'s sorted distinct characters (reports bits_per_char)',
      "seq_len": "model input length T (windows of T + 1 tokens)",
      "val_fraction": "fraction at the end of the file used for eval, in (0, 1)",
      "vocab_file": 'optional JSON for the "char" vocabulary: loaded if it exists, else written',
  }

  def __init__(self, config):
    """Stores the config; the file is read on first use (validate, vocab_size, data)."""
    super().__init__(config)
    self._tokens: tuple[np.ndarray, np.ndarray] | None = None
    self.char_vocab: text.CharVocab | None = None

  # ---- data ----------------------------------------------------------------

  def _splits(self) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) token arrays, loaded once."""
    if self._tokens is None:
      if self.cfg.vocab not in text.VOCABS:
        raise ValueError(f"char_lm: vocab must be one of {text.VOCABS}, got {self.cfg.vocab!r}")
      tokens, self.char_vocab = text.load_text_tokens(
          str(self.cfg.path), str(self.cfg.vocab), str(self.cfg.vocab_file))
      self._tokens = text.split_tokens(tokens, float(self.cfg.val_fraction))
    return self._tokens

  def validate(self) -> None:
    """Checks keys, the file (exists, UTF-8 for "char"), the split sizes against seq_len and batch size."""
    super().validate()
    if int(self.cfg.seq_len) < 1:
      raise ValueError(f"char_lm: seq_len must be >= 1, got {self.cfg.seq_len}")
    if not 0.0 < float(self.cfg.val_fraction) < 1.0:
      raise ValueError(f"char_lm: val_fraction must be in (0, 1), got {self.cfg.val_fraction}")
    train, val = self._splits()
    if len(train) < self.seq_len + 1:
      raise ValueError(f"char_lm: the train split of {self.cfg.path} has {len(train)} tokens, "
                       f"fewer than seq_len + 1 = {self.seq_len + 1}")
    windows = text.num_eval_windows(len(val), self.seq_len)
    if windows < self.batch_size:
      raise ValueError(f"char_lm: the val split of {self.cfg.path} has {windows} windows of "
                       f"seq_len={self.seq_len}, fewer than one batch ({self.batch_size}); "
                       f"raise val_fraction or lower seq_len / batch_size")

  @property
  def vocab_size(self) -> int:
    """256 for vocab="byte"; the number of distinct characters for vocab="char" (reads the file)."""
    if self.cfg.vocab == "byte":
      return 256
    self._splits()
    return self.char_vocab.size

  @property
  def seq_len(self) -> int:
    """config.task.seq_len."""
    return int(self.cfg.seq_len)

  @property
  def eval_num_batches(self) -> int:
    """min(eval_batches, full batches of eval windows in the val split)."""
    _, val = self._splits()
    return min(self.num_eval_batches, text.num_eval_windows(len(val), self.seq_len) // self.batch_size)

  def train_iterator(self, shard_index: int | None = None,
                     shard_count: int | None = None) -> grain.DatasetIterator:
    """Infinite checkpointable iterator of random train windows.

    Yields inputs / targets int32 [B_host, T] and weights float32 ones [B_host, T].
    """
    train, _ = self._splits()
    fn = functools.partial(text.random_window, train, self.stream_seed("train"), seq_len=self.seq_len)
    return pipeline.train_iterator(fn, batch_size=self.batch_size, seed=0,
                                   shard_index=shard_index, shard_count=shard_count)

  def eval_batches(self, shard_index: int | None = None,
                   shard_count: int | None = None) -> list[Batch]:
    """The first `eval_num_batches` batches of contiguous non-overlapping val windows, in file order."""
    _, val = self._splits()
    fn = functools.partial(text.eval_window, val, seq_len=self.seq_len)
    return pipeline.eval_batches(fn, batch_size=self.batch_size, num_batches=self.eval_num_batches,
                                 shard_index=shard_index, shard_count=shard_count)

  # ---- metrics -------------------------------------------------------------

  @property
  def bits_metric(self) -> str:
    """"bits_per_byte" for vocab="byte", "bits_per_char" for vocab="char"."""
    return "bits_per_byte" if self.cfg.vocab == "byte" else "bits_per_char"

  def metrics(self, logits: jnp.ndarray,
              batch: Mapping[str, jnp.ndarray]) -> dict[str, metrics_lib.Pair]:
    """`loss` (nats), `accuracy`, and `bits_per_byte` / `bits_per_char` = loss / ln 2 pairs."""
    m = metrics_lib.token_metrics(logits, batch)
    m[self.bits_metric] = metrics_lib.bits_pair(m["loss"])
    return m
