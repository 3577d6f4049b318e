"""Visual question answering on 'scenes' (mmjax/data/builders/scenes.py):
image + question -> a one-word answer, classified or generated.

  python experiments/train.py --config=configs/vqa.py --workdir=runs/vqa
  python experiments/train.py --config=configs/vqa.py:answer=generate ...

Questions ask an object's colour or shape, the number of objects, whether
an object is there, or how two objects lie ("is the circle left of the
square"); the 14 answers are colours, shapes, counts and yes / no.

Variant string: keys of configs/default.py (fusion=, image=, text=, size=,
mode=), and
  answer=classify   the answer's class ('answer_label') from the fused
                    tokens' pooled vector: the classifier (default);
                    eval 'accuracy' is exact-match accuracy
  answer=generate   the answer's words by a Transformer decoder attending
                    to the fused tokens (model 'seq2seq'); eval
                    'exact_match' (decoder= and decoding= keys apply)
The fusion is cross-attention (text tokens attend to image tokens and the
reverse), so the question can pick out the object it asks about.
"""
from configs import default

PP = dict(default.PP, text='tokenize(8)')
KEYS = ('answer',) + default.SEQ2SEQ_KEYS


def get_config(arg=None):
  variant = default.parse_variant(arg, KEYS)
  answer = variant.pop('answer', 'classify')
  # Word order matters: "is the circle left of the square" and "is the
  # square left of the circle" are one bag of words.
  variant.setdefault('text', 'lstm')
  rest = ','.join(f'{k}={v}' for k, v in variant.items())
  if answer == 'classify':
    c = default.get_config(','.join(filter(None, [
        'modalities=image+text,label=answer_label', rest])))
    c.dataset.features.text = 'question'
    default.set_preprocessing(c, PP)
  elif answer == 'generate':
    c = default.seq2seq_config(rest, modalities=('image', 'text'),
                               target='answer', length=2,
                               metrics=('exact_match',), pp=PP,
                               fusion_name='cross_attention')
    c.dataset.features.text = 'question'
  else:
    raise ValueError(f'config variant answer={answer!r}: expected classify '
                     'or generate')
  # Accuracy rises late in training: a longer schedule than default.py's.
  c.num_train_steps = 6000
  c.eval_every_steps = c.checkpoint_every_steps = 2000
  return c
