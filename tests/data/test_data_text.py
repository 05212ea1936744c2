"""char/byte text loading, splits and windows."""

import json

import numpy as np
import pytest

from attnlab.data import text

TEXT = "héllo wörld, ünïcode text! " * 40


@pytest.fixture
def text_file(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text(TEXT, encoding="utf-8")
  return str(path)


def test_byte_vocab(text_file):
  tokens, vocab = text.load_text_tokens(text_file, "byte")
  assert vocab is None and tokens.dtype == np.uint8
  assert bytes(tokens) == TEXT.encode("utf-8")


def test_char_vocab_sorted_and_stable(text_file, tmp_path):
  vocab_file = str(tmp_path / "vocab.json")
  tokens, vocab = text.load_text_tokens(text_file, "char", vocab_file)
  assert vocab.chars == "".join(sorted(set(TEXT)))
  assert vocab.decode(tokens) == TEXT
  assert json.loads(open(vocab_file, encoding="utf-8").read())["chars"] == vocab.chars
  # A stored vocabulary wins over the file's characters (stable mapping).
  wider = text.CharVocab("".join(sorted(set(TEXT + "ABC"))))
  open(vocab_file, "w", encoding="utf-8").write(wider.to_json())
  tokens2, vocab2 = text.load_text_tokens(text_file, "char", vocab_file)
  assert vocab2 == wider and vocab2.decode(tokens2) == TEXT


def test_missing_file_names_path(tmp_path):
  missing = str(tmp_path / "nope.txt")
  with pytest.raises(FileNotFoundError, match="nope.txt") as e:
    text.load_text_tokens(missing, "byte")
  assert "\n" not in str(e.value)


def test_split_and_windows():
  tokens = np.arange(100, dtype=np.int32)
  train, val = text.split_tokens(tokens, 0.1)
  assert len(train) == 90 and val.tolist() == list(range(90, 100))
  ex = text.random_window(train, 0, 5, seq_len=8)
  np.testing.assert_array_equal(ex["targets"], ex["inputs"] + 1)
  assert ex["targets"].max() < 90 and ex["weights"].sum() == 8
  starts = {int(text.random_window(train, 0, i, seq_len=8)["inputs"][0]) for i in range(300)}
  assert min(starts) == 0 and max(starts) == 90 - 9  # full range of starts
  assert text.num_eval_windows(10, 3) == 3
  windows = [text.eval_window(val, i, 3) for i in range(3)]
  assert [w["inputs"].tolist() for w in windows] == [[90, 91, 92], [93, 94, 95], [96, 97, 98]]
  assert windows[-1]["targets"].tolist() == [97, 98, 99]
