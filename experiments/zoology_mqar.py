"""Zoology's MQAR figure (Arora et al. 2023, "Zoology: Measuring and improving recall in
efficient language models", Fig. 2; the Based paper's Fig. 2 repeats it): accuracy of 2-layer
models against d_model, per sequence length, per sequence mixer.

Protocol (Zoology's configs): vocabulary 8,192; 2 layers, no MLP between them; (seq_len,
pairs) in {(64, 4), (128, 8), (256, 16)}, queries placed by Zoology's power law (a = 0.01) and
random filler tokens; d_model in {64, 128, 256, 512}; the best of 4 log-spaced learning rates
in [1e-4, 1e-2] per cell; training stops at 99% eval accuracy. The 8,192-way head is computed at
the query positions only (`task.head_at_queries`, same loss and accuracy).

Claims (stated in Zoology's text and figure, thresholds ours): (1) attention solves MQAR at
every width and length (>= 0.97 here, the figure reads ~1.0); (2) the fixed-state variants need
more width as the sequence grows: at seq 256 they gain from 64 -> the widest width, and at
d_model 64 they lose from seq 64 -> 256.

Run one cell by hand:
  attnlab train --config configs/mqar.py:size=zoology,variant=based,d_model=64,seq_len=64,lr=0.003,stop=0.99 \
      --workdir runs/zoology/based_d64_t64
  attnlab reproduce zoology_mqar --scale small --jobs 2 --workdir experiments/zoology_mqar/small
The accuracy against state size plot: python scripts/recall_vs_state.py WORKDIR
Format: see experiments/itransformer_etth1.py.
"""

import ml_collections

VARIANTS = ["mha", "sliding_window", "based", "linear", "gla", "deltanet", "retention", "performer"]
FIXED_STATE = ["based", "linear", "gla", "deltanet", "retention", "performer"]  # sliding_window: a window, also fixed
LRS = [1e-4, 4.6e-4, 2.2e-3, 1e-2]  # np.logspace(-4, -2, 4), Zoology's sweep
SMALL_VARIANTS = ["mha", "sliding_window", "based", "gla", "deltanet"]


def get_experiment():
  """The experiment as a ConfigDict (format: experiments/itransformer_etth1.py)."""
  cells = [{"point": {"variant": "mha", "seq_len": t, "d_model": d}, "published": {"eval/accuracy": 0.99}}
           for t in (64, 128, 256) for d in (64, 128, 256, 512)]
  cells += [{"point": {"variant": v, "seq_len": t}, "published": {}} for v in FIXED_STATE for t in (64, 256)]
  cells += [{"point": {"variant": v, "d_model": 64}, "published": {}} for v in FIXED_STATE]
  claims = [{"metric": "eval/accuracy", "kind": "at_least", "tolerance": 0.02,
             "note": "claim 1: attention >= 0.97 at every width and length"}]
  return ml_collections.ConfigDict({
      "name": "zoology_mqar",
      "config": "configs/mqar.py",
      "base_arg": "size=zoology,stop=0.99",
      "sweep": {"variant": VARIANTS, "seq_len": [64, 128, 256], "d_model": [64, 128, 256, 512],
                "lr": LRS},
      "seeds": 1,
      "best_of": {"axis": "lr", "metric": "eval/accuracy", "higher_is_better": True},
      "scales": {
          "paper": {"args": {}, "overrides": ["--config.train.steps=20000", "--config.train.eval_every=500"],
                    "note": "Zoology's grid: 8 mixers x 3 lengths x 4 widths x 4 learning rates, "
                            "up to 20k steps of 64 sequences (Zoology: 100k examples x 64 epochs), "
                            "stopping at 99% eval accuracy"},
          "small": {"args": {"variant": SMALL_VARIANTS, "seq_len": [64, 256], "d_model": [64, 128],
                             "lr": [3e-3]},
                    "overrides": ["--config.train.steps=1500", "--config.train.warmup_steps=100",
                                  "--config.train.eval_every=250", "--config.train.checkpoint_every=250"],
                    "note": "5 mixers x lengths 64, 256 x widths 64, 128, one learning rate (3e-3; "
                            "the paper scale takes the best of 4), at most 1500 steps of 64 "
                            "sequences, stopping at 99%"},
      },
      "metrics": ["eval/accuracy"],
      "cells": cells,
      "claims": claims + [
          {"metric": "eval/accuracy", "kind": "improves", "over": {"d_model": 64}, "by": {"d_model": 128},
           "higher_is_better": True, "tolerance": 0.0,
           "note": "claim 2a: a fixed-state mixer at seq 256 gains from more width (read on the "
                   "variant=V, seq_len=256 cells; on attention cells there is nothing to gain)"},
          {"metric": "eval/accuracy", "kind": "improves", "over": {"seq_len": 256}, "by": {"seq_len": 64},
           "higher_is_better": True, "tolerance": 0.0,
           "note": "claim 2b: at d_model 64 a fixed-state mixer loses accuracy from seq 64 to 256 "
                   "(read on the variant=V, d_model=64 cells)"}],
      "source": "Arora et al. 2023, Zoology, Fig. 2 (MQAR accuracy against model dimension; "
                "attention ~1.0 at every width; gated convolutions and linear attention need "
                "width growing with the sequence length)",
  })
