"""Image captioning on 'scenes' (mmjax/data/builders/scenes.py): a CNN over
the image, a Transformer decoder attending to its 4 x 4 tokens, beam search.

  python experiments/train.py --config=configs/captioning.py \
      --workdir=runs/captioning
  python experiments/train.py --config=configs/captioning.py:decoder=lstm ...

A caption names each object's colour and shape and, for two objects, their
relation ("a red circle left of a blue square"); three are listed left to
right. Eval reports BLEU-4 and CIDEr-D over the 2,048 test scenes (one
reference each) and writes predictions to <workdir>/predictions/.

Variant string: keys of configs/default.py (image=, size=, mode=), plus
decoder=transformer|lstm and decoding=beam|greedy.
"""
from configs import default


def get_config(arg=None):
  c = default.seq2seq_config(arg, modalities=('image',), target='caption',
                             length=12, metrics=('bleu4', 'cider_d'))
  c.num_train_steps = 2000
  c.eval_every_steps = c.checkpoint_every_steps = 1000
  return c
