"""Mean ± std over training seeds of abnar_encoder_check.py's correlations, per variant.

  python experiments/analysis/abnar_seed_table.py experiments/analysis/abnar_encoder_check_seeds_output.txt

Reads the JSON rows (the output's last line), groups them by variant and prints a markdown
table of mean ± std (ddof=1, over the seeds) of each Spearman correlation, the top-1
agreement with the ablation, and per variant and reference in how many seeds rollout and
flow beat raw attention.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np

METHODS = ("raw", "rollout", "flow")
REFS = ("ablation", "grad")


def main(path: str) -> None:
  rows = json.loads(open(path).read().strip().splitlines()[-1])
  by_variant = defaultdict(list)
  for r in rows:
    if "refused" not in r:
      by_variant[r["variant"].split(",")[0]].append(r)
  cols = [f"{m}_vs_{ref}" for ref in REFS for m in METHODS]
  print("| variant | seeds | " + " | ".join(c.replace("_vs_", " / ") for c in cols) + " |")
  print("|" + "---|" * (2 + len(cols)))
  for variant, rs in by_variant.items():
    cells = [np.array([r[c] for r in rs]) for c in cols]
    print(f"| {variant} | {len(rs)} | " + " | ".join(f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" for a in cells) + " |")
  print("\nfraction of inputs whose top token is the ablation's top token, mean ± std over seeds "
        "(raw / rollout / flow):")
  for variant, rs in by_variant.items():
    top = [np.array([r[f"{m}_top1_ablation"] for r in rs]) for m in METHODS]
    print(f"  {variant}: " + " / ".join(f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" for a in top))
  print("\nseeds in which the method beats raw attention (rollout, flow):")
  for variant, rs in by_variant.items():
    wins = {ref: [sum(r[f"{m}_vs_{ref}"] > r[f"raw_vs_{ref}"] for r in rs) for m in METHODS[1:]] for ref in REFS}
    print(f"  {variant}: " + ", ".join(f"vs {ref} {w[0]}/{len(rs)} and {w[1]}/{len(rs)}" for ref, w in wins.items()))


if __name__ == "__main__":
  main(sys.argv[1])
