"""label,text CSV reading: tokens, label mapping, splits and one-line errors for bad files."""

import numpy as np
import pytest

from attnlab.data import text_classification as tc


def _write(tmp_path, name, content, mode="w"):
  p = tmp_path / name
  if mode == "wb":
    p.write_bytes(content)
  else:
    p.write_text(content, encoding="utf-8")
  return str(p)


def test_reads_header_quotes_and_unicode(tmp_path):
  path = _write(tmp_path, "a.csv", 'id,text,label\n1,"hello, world",pos\n2,"say ""hi""\nbye",neg\n'
                                   '3,héllo,pos\n')
  rows = tc.read_labeled_csv(path)
  assert rows.labels == ("pos", "neg", "pos")
  assert rows.texts == (b"hello, world", b'say "hi"\nbye', "héllo".encode())


def test_no_header_and_bom(tmp_path):
  path = _write(tmp_path, "b.csv", "\ufeff1,first\n2,second\n", )
  rows = tc.read_labeled_csv(path, header=False)
  assert rows.labels == ("1", "2") and rows.texts == (b"first", b"second")


def test_byte_tokens_truncate_pad_and_roundtrip():
  ids = tc.byte_tokens("aé".encode(), 5)
  assert ids.dtype == np.int32 and ids.tolist() == [ord("a") + 1, 0xC3 + 1, 0xA9 + 1, 0, 0]
  assert tc.decode_bytes(ids) == "aé"
  assert tc.byte_tokens(b"abcdef", 3).tolist() == [98, 99, 100]
  assert tc.byte_tokens(b"\xff", 1).tolist() == [256]  # max id = VOCAB_SIZE - 1
  assert tc.VOCAB_SIZE == 257


def test_label_names_numeric_then_string_order():
  assert tc.label_names(["10", "2", "1", "2"]) == ("1", "2", "10")
  assert tc.label_names(["neg", "pos", "neg"]) == ("neg", "pos")
  assert tc.label_ids(["10", "1"], ("1", "2", "10")).tolist() == [2, 0]
  with pytest.raises(ValueError, match="'x' in v.csv is not a training label"):
    tc.label_ids(["x"], ("a", "b"), source="v.csv")


def test_split_by_fraction_is_seeded_disjoint_and_complete(tmp_path):
  rows = "".join(f"{'ab'[i % 2]},text {i}\n" for i in range(40))
  path = _write(tmp_path, "c.csv", "label,text\n" + rows)
  splits, names = tc.load_splits(train_path=path, val_fraction=0.25, seed=3)
  assert names == ("a", "b")
  assert len(splits["train"]) == 30 and len(splits["val"]) == 10 and "test" not in splits
  train, val = set(splits["train"].texts), set(splits["val"].texts)
  assert not train & val and len(train | val) == 40
  again, _ = tc.load_splits(train_path=path, val_fraction=0.25, seed=3)
  assert again["val"].texts == splits["val"].texts
  other, _ = tc.load_splits(train_path=path, val_fraction=0.25, seed=4)
  assert other["val"].texts != splits["val"].texts
  ex = splits["val"].example(0, 8)
  assert ex["inputs"].shape == (8,) and ex["targets"].dtype == np.int32
  assert int(ex["targets"]) == names.index("ab"[int(tc.decode_bytes(ex["inputs"]).split()[1]) % 2])


def test_separate_files(tmp_path):
  tr = _write(tmp_path, "tr.csv", "label,text\n0,x\n1,y\n")
  va = _write(tmp_path, "va.csv", "label,text\n1,z\n")
  te = _write(tmp_path, "te.csv", "label,text\n0,w\n1,v\n")
  splits, names = tc.load_splits(train_path=tr, val_path=va, test_path=te)
  assert names == ("0", "1") and len(splits["train"]) == 2
  assert splits["val"].labels.tolist() == [1] and splits["test"].labels.tolist() == [0, 1]
  bad = _write(tmp_path, "bad.csv", "label,text\n2,z\n")
  with pytest.raises(ValueError, match="label '2' in .*bad.csv is not a training label"):
    tc.load_splits(train_path=tr, val_path=bad)


@pytest.mark.parametrize("content,kw,error,match", [
    (None, {}, FileNotFoundError, "CSV file not found"),
    ("", {}, ValueError, "is empty"),
    ("label,text\n", {}, ValueError, "header but no data rows"),
    ("label,body\n0,x\n", {}, ValueError, r"no column\(s\) \['text'\]"),
    ("0,x,y\n", {"header": False}, ValueError, "row 1 has 3 fields, expected 2"),
    ("label,text\n0,\n", {}, ValueError, "row 2 has an empty text"),
    (b"label,text\n0,\xff\xfe\n", {}, ValueError, "is not valid UTF-8"),
    ("label,text\na,x\na,y\na,z\n", {}, ValueError, "single class 'a'"),
])
def test_bad_files_one_line_errors(tmp_path, content, kw, error, match):
  if content is None:
    path = str(tmp_path / "missing.csv")
  else:
    path = _write(tmp_path, "f.csv", content, mode="wb" if isinstance(content, bytes) else "w")
  with pytest.raises(error, match=match) as e:
    tc.load_splits(train_path=path, val_fraction=0.34, **kw)
  assert "\n" not in str(e.value)


def test_bad_val_fraction(tmp_path):
  path = _write(tmp_path, "g.csv", "label,text\n0,x\n1,y\n")
  with pytest.raises(ValueError, match="val_fraction must be in"):
    tc.load_splits(train_path=path, val_fraction=1.0)
  with pytest.raises(ValueError, match="leaves an empty train or val split"):
    tc.load_splits(train_path=path, val_fraction=0.1)
