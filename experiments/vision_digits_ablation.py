"""Digits recipe ablation (configs/vision.py, mha): the conv stem off, label smoothing off,
3 seeds each, at the budget of vision_digits' small scale (its mha runs are the baseline).

  attnlab reproduce vision_digits_ablation --scale small
  attnlab train --config configs/vision.py:ablate=stem,seed=0 --workdir runs/vision_abl/stem_s0
"""

import ml_collections

SMALL_STEPS = 300  # = vision_digits.SMALL_STEPS (experiment files import only ml_collections)



def get_experiment():
  """The experiment as a ConfigDict (see experiments/itransformer_etth1.py for the format)."""
  small = [f"--config.train.steps={SMALL_STEPS}", "--config.train.warmup_steps=30",
           "--config.train.eval_every=100", "--config.train.checkpoint_every=300"]
  return ml_collections.ConfigDict({
      "name": "vision_digits_ablation",
      "config": "configs/vision.py",
      "base_arg": "dataset=digits,variant=mha",
      "sweep": {"ablate": ["stem", "smoothing"]},
      "seeds": 3,
      "scales": {"paper": {"args": {}, "overrides": [], "note": "3000 steps"},
                 "small": {"args": {}, "overrides": small, "note": f"{SMALL_STEPS} steps"}},
      "metrics": ["eval/accuracy"],
      "cells": [{"point": {"ablate": a}, "published": {}} for a in ["stem", "smoothing"]],
      "claims": [],
      "source": "none (ablation of our recipe)",
  })
