"""A synthetic agreement-style classification task with attractors (in the spirit of
Linzen et al., 2016's subject-verb agreement, which Abnar & Zuidema, 2020 use), as
`label,text` CSVs for the `text_classification` task.

  python experiments/analysis/agreement_data.py OUTDIR [--train 20000 --val 512 --length 32]

Each text is LENGTH bytes of lowercase filler; a marker '#' at a random position is
followed by the subject, an uppercase letter from "ABCD" (label 0, "singular") or "WXYZ"
(label 1, "plural"); two attractors, uppercase letters of the other class, stand at other
random positions (never after the marker). Counting uppercase letters gives the wrong label
every time: the model must find the letter after the marker. Writes OUTDIR/train.csv and
OUTDIR/val.csv (header label,text; seeds 0 and 1).
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np

FILLER = np.array(list("abcdefghijklmnopqrstuvwxyz"))
CLASSES = (np.array(list("ABCD")), np.array(list("WXYZ")))


def example(rng: np.random.Generator, length: int) -> tuple[int, str]:
  """(label, text of `length` bytes): marker + subject, two attractors of the other class."""
  text = rng.choice(FILLER, size=length)
  label = int(rng.integers(2))
  marker, a1, a2 = rng.choice(length - 1, size=3, replace=False)
  while {a1, a2} & {marker + 1}:  # an attractor never stands where the subject goes
    marker, a1, a2 = rng.choice(length - 1, size=3, replace=False)
  text[marker] = "#"
  text[marker + 1] = rng.choice(CLASSES[label])
  text[[a1, a2]] = rng.choice(CLASSES[1 - label], size=2)
  return label, "".join(text)


def write(path: str, n: int, length: int, seed: int) -> None:
  """Writes `n` examples to the CSV `path`."""
  rng = np.random.default_rng(seed)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["label", "text"])
    for _ in range(n):
      w.writerow(example(rng, length))


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("outdir")
  p.add_argument("--train", type=int, default=20000)
  p.add_argument("--val", type=int, default=512)
  p.add_argument("--length", type=int, default=32)
  a = p.parse_args(argv)
  os.makedirs(a.outdir, exist_ok=True)
  write(os.path.join(a.outdir, "train.csv"), a.train, a.length, 0)
  write(os.path.join(a.outdir, "val.csv"), a.val, a.length, 1)


if __name__ == "__main__":
  main()
