"""LRA ListOps: nested MAX / MIN / MED / SM expressions over digits, label = the value.

References: N. Nangia, S. Bowman. "ListOps: A Diagnostic Dataset for Latent Tree
Learning", 2018 (arXiv:1804.06028); Y. Tay et al. "Long Range Arena", ICLR 2021
(arXiv:2011.04006), generator `lra_benchmarks/data/listops.py`.

The rules (LRA's, re-implemented here in numpy):

- A node at depth d (the root has depth 1) is an operator with probability
  `OPERATOR_P = 0.25` when d < max_depth, and always a digit at d = max_depth.
  A digit is uniform in 0..9. An operator is uniform over MAX, MIN, MED, SM and
  has a uniform number of arguments in [2, max_args], each a node at depth d + 1.
- MAX / MIN are the max / min of the arguments, MED is `int(median)` (the mean of
  the two middle values, rounded down, for an even count), SM is the sum mod 10.
- The length of an expression counts one token per digit, per operator and per
  closing bracket "]"; LRA keeps an expression iff min_length < length <
  max_length (strict bounds, rejection sampling) and its defaults are
  max_depth=10, max_args=10, min_length=500, max_length=2000.

Tokens, one id each (`VOCAB`; id 0 is padding): the digits "0".."9", the
operators "[MAX", "[MIN", "[MED", "[SM" (an operator token opens its bracket) and
"]". So `inputs` has exactly `length` non-pad tokens and `seq_len >= max_length - 1`
never truncates. (LRA writes extra "( ... )" pairs into its TSV and then feeds it to
a tokenizer that drops every non-alphanumeric token, "]" included; ours keeps "]",
as later ListOps pipelines such as S4's do, and `encode` skips "(" / ")" so LRA's
own TSV strings can be read.)

Splits: example i of split s is a pure function of (seed, s, i): its numpy
Generator is `example_rng(derive_seed(seed, "listops/" + s), i)`, so train, val and
test come from disjoint streams and nothing is downloaded. (LRA also removes
duplicate expressions across its splits; at lengths >= 100 a duplicate between
independent streams has negligible probability, so none is removed here.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attnlab.data.seeding import derive_seed, example_rng

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
END = "]"
DIGITS = tuple(str(d) for d in range(10))
PAD = "<pad>"
VOCAB = (PAD,) + DIGITS + OPERATORS + (END,)  # id = index: pad 0, digit d -> d + 1, ops 11..14, ] 15
VOCAB_SIZE = len(VOCAB)
NUM_CLASSES = 10
SPLITS = ("train", "val", "test")

OPERATOR_P = 0.25  # LRA's VALUE_P: a node below max_depth is an operator with this probability
DIGIT_ID0 = 1
OP_ID0 = 1 + len(DIGITS)
END_ID = VOCAB_SIZE - 1
_TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}

DEFAULT_MAX_ATTEMPTS = 100_000


@dataclasses.dataclass(frozen=True)
class ListOpsSpec:
  """Generator parameters (LRA defaults); see the module docstring for their meaning."""

  max_depth: int = 10
  max_args: int = 10
  min_length: int = 500
  max_length: int = 2000

  def check(self) -> None:
    """Raises a one-line ValueError if no expression can satisfy these parameters."""
    if self.max_depth < 2:
      raise ValueError(f"listops: max_depth must be >= 2 (depth 1 is a single digit), got {self.max_depth}")
    if self.max_args < 2:
      raise ValueError(f"listops: max_args must be >= 2, got {self.max_args}")
    if self.min_length < 0:
      raise ValueError(f"listops: min_length must be >= 0, got {self.min_length}")
    if self.max_length - self.min_length < 2:
      raise ValueError(f"listops: need min_length + 1 < max_length (strict bounds), got "
                       f"min_length={self.min_length}, max_length={self.max_length}")
    if self.min_length >= max_possible_length(self.max_depth, self.max_args):
      raise ValueError(f"listops: min_length={self.min_length} is unreachable: the longest expression "
                       f"with max_depth={self.max_depth}, max_args={self.max_args} has "
                       f"{max_possible_length(self.max_depth, self.max_args)} tokens")


def max_possible_length(max_depth: int, max_args: int) -> int:
  """Tokens of the largest tree: every node above max_depth an operator with max_args arguments."""
  length = 1
  for _ in range(max_depth - 1):
    length = 2 + max_args * length
  return length


class _Uniforms:
  """A stream of float64 uniforms in [0, 1) drawn from `rng` in blocks (fast scalar draws)."""

  def __init__(self, rng: np.random.Generator, block: int = 4096):
    self._rng, self._block = rng, block
    self._buf = rng.random(block)
    self._pos = 0

  def next(self) -> float:
    """The next uniform."""
    if self._pos == self._block:
      self._buf = self._rng.random(self._block)
      self._pos = 0
    u = self._buf[self._pos]
    self._pos += 1
    return u


class _TooLong(Exception):
  """Raised inside `_draw_tree` once the expression has reached max_length tokens."""


def _apply(op: int, args: list[int]) -> int:
  """Value of operator OPERATORS[op] on integer `args`."""
  if op == 0:
    return max(args)
  if op == 1:
    return min(args)
  if op == 2:
    s = sorted(args)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
  return sum(args) % 10


def _draw_tree(u: _Uniforms, depth: int, spec: ListOpsSpec, out: list[int]) -> int:
  """Appends the token ids of one node (and its subtree) to `out`; returns its value.

  Raises _TooLong as soon as len(out) >= spec.max_length (the draw would be rejected).
  """
  if len(out) >= spec.max_length:
    raise _TooLong
  if depth < spec.max_depth and u.next() < OPERATOR_P:
    op = int(u.next() * len(OPERATORS))
    num_args = 2 + int(u.next() * (spec.max_args - 1))
    out.append(OP_ID0 + op)
    args = [_draw_tree(u, depth + 1, spec, out) for _ in range(num_args)]
    out.append(END_ID)
    return _apply(op, args)
  digit = int(u.next() * 10)
  out.append(DIGIT_ID0 + digit)
  return digit


def sample_expression(rng: np.random.Generator, spec: ListOpsSpec,
                      max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> tuple[np.ndarray, int]:
  """Draws trees from `rng` until one has min_length < length < max_length (LRA's rule).

  Returns (token ids int32 [length], value in 0..9). Raises a one-line ValueError
  after `max_attempts` rejected draws.
  """
  u = _Uniforms(rng)
  for _ in range(max_attempts):
    out: list[int] = []
    try:
      value = _draw_tree(u, 1, spec, out)
    except _TooLong:
      continue
    if spec.min_length < len(out) < spec.max_length:
      return np.asarray(out, dtype=np.int32), value
  raise ValueError(f"listops: no expression with {spec.min_length} < length < {spec.max_length} in "
                   f"{max_attempts} draws (max_depth={spec.max_depth}, max_args={spec.max_args}); "
                   f"widen the length bounds")


def split_seed(seed: int, split: str) -> int:
  """Seed of the `split` stream ("train" / "val" / "test"), derived from `seed`."""
  if split not in SPLITS:
    raise ValueError(f"listops: split must be one of {SPLITS}, got {split!r}")
  return derive_seed(seed, f"listops/{split}")


def listops(seed: int, index: int, *, split: str = "train", seq_len: int = 2000,
            max_depth: int = 10, max_args: int = 10, min_length: int = 500,
            max_length: int = 2000) -> dict[str, np.ndarray]:
  """Returns ListOps example `index` of `split` of the dataset `seed`.

  `inputs` int32 [seq_len]: the expression's token ids (see VOCAB), right-padded
  with 0 (truncated to seq_len if it is longer; then the label may not be
  computable from the input, so use seq_len >= max_length - 1). `targets` int32
  []: the expression's value 0..9. `weights` float32 []: 1.0.
  Deterministic in (seed, split, index).
  """
  spec = ListOpsSpec(max_depth=max_depth, max_args=max_args, min_length=min_length,
                     max_length=max_length)
  spec.check()
  if seq_len < 1:
    raise ValueError(f"listops: seq_len must be >= 1, got {seq_len}")
  tokens, value = sample_expression(example_rng(split_seed(seed, split), index), spec)
  inputs = np.zeros(seq_len, dtype=np.int32)
  n = min(seq_len, len(tokens))
  inputs[:n] = tokens[:n]
  return {"inputs": inputs, "targets": np.asarray(value, dtype=np.int32),
          "weights": np.asarray(1.0, dtype=np.float32)}


def encode(text: str) -> np.ndarray:
  """Token ids int32 [n] of a whitespace-separated expression such as "[MAX 2 [MIN 4 7 ] 0 ]".

  "(" and ")" tokens (in LRA's TSV files) are skipped; any other unknown token is a
  ValueError.
  """
  ids = []
  for tok in text.split():
    if tok in ("(", ")"):
      continue
    if tok not in _TOKEN_ID or tok == PAD:
      raise ValueError(f"listops: unknown token {tok!r}; expected one of {VOCAB[1:]}")
    ids.append(_TOKEN_ID[tok])
  return np.asarray(ids, dtype=np.int32)


def decode(ids) -> str:
  """The expression string of token ids (padding 0 dropped), inverse of `encode`."""
  return " ".join(VOCAB[int(i)] for i in ids if int(i) != 0)
