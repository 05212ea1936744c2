"""The Based recipe question (Arora et al. 2024, "Simple linear attention language models
balance the recall-throughput tradeoff", Sec. 4 / Fig. 3; also Zoology Sec. 5): how many
softmax layers does a linear or gated model need to recover `mha`'s recall?

4-layer models on configs/mqar.py:size=recall (vocabulary 64, seq 256, 16 pairs, width 64, a
short convolution before each mixer, no MLP, 300 steps), with 0, 1 or 2 of the 4 layers full
softmax attention (attnlab's per-layer variant lists: "gla,gla,gla,mha" is three GLA layers and
one softmax layer; "gla,mha" repeats to gla,mha,gla,mha), against 4 softmax layers.

Claims (the papers' qualitative finding; thresholds ours): with no softmax layer the linear
and gated models fall short of mha's accuracy (by more than 5% relative); with 2 of 4 softmax
layers they come within 5% of it.

  attnlab reproduce mqar_hybrids --scale small --jobs 2 --workdir experiments/mqar_hybrids/small
Format: see experiments/itransformer_etth1.py.
"""

import ml_collections


def _stacks(mixer: str) -> list[str]:
  """0, 1 and 2 softmax layers of 4 with `mixer` in the others."""
  return [f"{mixer},{mixer},{mixer},{mixer}", f"{mixer},{mixer},{mixer},mha", f"{mixer},mha"]


def get_experiment():
  """The experiment as a ConfigDict (format: experiments/itransformer_etth1.py)."""
  stacks = ["mha"] + _stacks("gla") + _stacks("linear")
  claims = []
  for mixer in ("gla", "linear"):
    none, _, two = _stacks(mixer)
    claims += [
        {"metric": "eval/accuracy", "kind": "improves", "over": {"variant": none}, "by": {"variant": "mha"},
         "higher_is_better": True, "tolerance": 0.05,
         "note": f"{mixer} with no softmax layer is more than 5% below mha"},
        {"metric": "eval/accuracy", "kind": "improves", "over": {"variant": "mha"}, "by": {"variant": two},
         "higher_is_better": True, "tolerance": -0.05,
         "note": f"{mixer} with 2 of 4 softmax layers is within 5% of mha"}]
  return ml_collections.ConfigDict({
      "name": "mqar_hybrids",
      "config": "configs/mqar.py",
      "base_arg": "size=recall,layers=4,d_model=64",
      "sweep": {"variant": stacks},
      "seeds": 2,
      "scales": {
          "paper": {"args": {}, "seeds": 3,
                    "overrides": ["--config.train.steps=3000", "--config.train.eval_every=250"],
                    "note": "the recall budget x 10 (3000 steps), 3 seeds"},
          "small": {"args": {}, "seeds": 1, "overrides": [],
                    "note": "the zoo's recall budget (300 steps of 64 sequences, lr 1e-2), one seed"},
      },
      "metrics": ["eval/accuracy"],
      "cells": [{"point": {}, "published": {}}] + [{"point": {"variant": v}, "published": {}} for v in stacks],
      "claims": claims,
      "source": "Arora et al. 2024 (Based), Sec. 4 and Fig. 3: a few softmax layers in a linear model "
                "recover attention's recall; Zoology (Arora et al. 2023), Sec. 5",
  })
