"""Character / byte level language-model data from one UTF-8 text file.

`load_text_tokens` reads a file into token ids with a byte vocabulary (256 ids,
the raw UTF-8 bytes) or a char vocabulary (the file's distinct characters,
sorted by code point); `split_tokens` cuts train / val by fraction of the file
(the last `val_fraction` is val); `random_window` and `eval_window` cut
`seq_len + 1` token windows into next-token examples.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from attnlab.data.seeding import example_rng

VOCABS = ("byte", "char")


@dataclasses.dataclass(frozen=True)
class CharVocab:
  """A char vocabulary: `chars[i]` is the character with id i (sorted, stable)."""

  chars: str

  @property
  def size(self) -> int:
    """Number of ids."""
    return len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 [len(text)] ids; an unknown character is a ValueError."""
    table = {c: i for i, c in enumerate(self.chars)}
    try:
      return np.fromiter((table[c] for c in text), dtype=np.int32, count=len(text))
    except KeyError as e:
      raise ValueError(f"character {e.args[0]!r} is not in the vocabulary") from None

  def decode(self, ids) -> str:
    """Returns the string for a 1-D sequence of ids."""
    return "".join(self.chars[int(i)] for i in ids)

  def to_json(self) -> str:
    """Serialises the vocabulary (for storing beside a checkpoint)."""
    return json.dumps({"vocab": "char", "chars": self.chars})

  @classmethod
  def from_json(cls, text: str) -> "CharVocab":
    """Inverse of `to_json`."""
    return cls(chars=json.loads(text)["chars"])

  @classmethod
  def from_text(cls, text: str) -> "CharVocab":
    """The sorted distinct characters of `text`."""
    return cls(chars="".join(sorted(set(text))))


def check_text_path(path: str) -> None:
  """Raises a one-line FileNotFoundError naming `path` if it is not a readable file."""
  if not path:
    raise ValueError("char_lm: config.task.path is empty; set it to a UTF-8 text file")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"char_lm: text file not found: {path}")


def load_text_tokens(path: str, vocab: str = "byte",
                     vocab_file: str = "") -> tuple[np.ndarray, CharVocab | None]:
  """Reads `path` into token ids.

  vocab="byte": returns (uint8 [num_bytes], None), ids are the UTF-8 bytes.
  vocab="char": returns (int32 [num_chars], CharVocab). The vocabulary is the
  sorted distinct characters of the whole file (train and val); if `vocab_file`
  is given it is loaded from there when it exists (so the mapping stays fixed
  even if the text changes) and written there otherwise.
  """
  if vocab not in VOCABS:
    raise ValueError(f"char_lm: vocab must be one of {VOCABS}, got {vocab!r}")
  check_text_path(path)
  with open(path, "rb") as f:
    raw = f.read()
  if vocab == "byte":
    return np.frombuffer(raw, dtype=np.uint8), None
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"char_lm: {path} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
  if vocab_file and os.path.isfile(vocab_file):
    char_vocab = read_vocab_file(vocab_file)
  else:
    char_vocab = CharVocab.from_text(text)
    if vocab_file:
      try:
        with open(vocab_file, "w", encoding="utf-8") as f:
          f.write(char_vocab.to_json())
      except OSError as e:  # a directory, a missing parent, no permission
        raise ValueError(f"char_lm: cannot write vocab_file {vocab_file} ({e.strerror})") from None
  return char_vocab.encode(text), char_vocab


def read_vocab_file(path: str) -> CharVocab:
  """The CharVocab stored at `path` by `CharVocab.to_json`; a one-line ValueError if the file
  is not UTF-8 JSON of the form {"chars": "<distinct characters>"}."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"char_lm: vocab_file {path} is not UTF-8 JSON ({str(e).splitlines()[0]})") from None
  chars = data.get("chars") if isinstance(data, dict) else None
  if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
    raise ValueError(f"char_lm: vocab_file {path} must hold {{\"chars\": <distinct characters>}} "
                     f"(as CharVocab.to_json writes it)")
  return CharVocab(chars=chars)


def split_tokens(tokens: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """Returns (train, val): the first 1 - val_fraction of `tokens` and the rest."""
  if not 0.0 < val_fraction < 1.0:
    raise ValueError(f"char_lm: val_fraction must be in (0, 1), got {val_fraction}")
  cut = int(round(len(tokens) * (1.0 - val_fraction)))
  return tokens[:cut], tokens[cut:]


def _window_example(window: np.ndarray) -> dict[str, np.ndarray]:
  """[seq_len + 1] ids -> inputs/targets int32 [seq_len], weights float32 ones."""
  window = window.astype(np.int32)
  return {"inputs": window[:-1], "targets": window[1:],
          "weights": np.ones(len(window) - 1, dtype=np.float32)}


def random_window(tokens: np.ndarray, seed: int, index: int, seq_len: int) -> dict[str, np.ndarray]:
  """Training example `index`: a window of seq_len + 1 tokens at a random start.

  The start is uniform in [0, len(tokens) - seq_len - 1] and a pure function of
  (seed, index). Returns inputs/targets int32 [seq_len] and weights float32 ones.
  """
  start = int(example_rng(seed, index).integers(0, len(tokens) - seq_len))
  return _window_example(tokens[start:start + seq_len + 1])


def num_eval_windows(num_tokens: int, seq_len: int) -> int:
  """Number of contiguous non-overlapping seq_len input windows in num_tokens tokens."""
  return max(num_tokens - 1, 0) // seq_len


def eval_window(tokens: np.ndarray, index: int, seq_len: int) -> dict[str, np.ndarray]:
  """Eval example `index`: inputs tokens[i*T : (i+1)*T], targets shifted by one (T = seq_len).

  Windows tile the split without overlap, so every token is predicted once.
  Returns inputs/targets int32 [seq_len] and weights float32 ones.
  """
  start = index * seq_len
  return _window_example(tokens[start:start + seq_len + 1])
