"""Plots learning curves from one or more workdirs' metrics.jsonl.

  python scripts/plot_curves.py runs/mqar runs/swa --metric eval/accuracy --out curves.png
"""

from __future__ import annotations

import argparse
import os

from attnlab.analysis.curves import curves_frame, plot_curves


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdirs", nargs="+")
  p.add_argument("--metric", action="append", help="metric name(s), default eval/accuracy and train/loss")
  p.add_argument("--out", default="curves.png")
  args = p.parse_args()
  missing = [w for w in args.workdirs if not os.path.isfile(os.path.join(w, "metrics.jsonl"))]
  if missing:
    raise SystemExit(f"error: no metrics.jsonl in {', '.join(missing)}")
  names = [os.path.basename(os.path.normpath(w)) for w in args.workdirs]
  runs = dict(zip(names if len(set(names)) == len(names) else args.workdirs, args.workdirs))
  frame = curves_frame(runs)
  print(f"wrote {plot_curves(frame, args.metric or ['eval/accuracy', 'train/loss'], args.out)}")


if __name__ == "__main__":
  main()
