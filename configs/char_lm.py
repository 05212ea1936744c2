"""Character/byte-level language modelling on any UTF-8 text file (reports bits per char/byte).

Run on tiny Shakespeare (or any text file):
  attnlab train --config configs/char_lm.py --config.task.path=../shared/data/tinyshakespeare.txt --workdir runs/shakespeare
Another variant, byte vocabulary, smoke run:
  attnlab train --config configs/char_lm.py:variant=sliding_window,vocab=byte --config.task.path=FILE --workdir runs/x
  attnlab train --config configs/char_lm.py:smoke=True --config.task.path=FILE --workdir /tmp/smoke
"""

from attnlab import config_lib

ARGS = dict(variant="mha", vocab="char", smoke=False)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, ARGS)
  c = config_lib.base_config()
  c.task.name = "char_lm"
  c.task.path = ""
  c.task.vocab = a["vocab"]
  c.task.seq_len = 256
  c.task.val_fraction = 0.1
  c.task.vocab_file = ""  # optional JSON of the "char" vocabulary: loaded if it exists, else written
  c.model.variant = a["variant"]
  c.model.num_layers = 4
  c.model.d_model = 256
  c.model.num_heads = 4
  c.train.steps = 5000
  c.train.batch_size = 32
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 200
  c.train.eval_every = 500
  c.train.eval_batches = 8
  c.train.checkpoint_every = 500
  if a["smoke"]:
    config_lib.apply_smoke(c)
    c.task.seq_len = 32
  config_lib.apply_variant_needs(c)
  return c
