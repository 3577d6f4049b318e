"""Contrastive retrieval on 'scenes' (mmjax/data/builders/scenes.py): two
towers embed an image (or the spoken transcript) and its text into one space.

  python experiments/train.py --config=configs/retrieval.py \
      --workdir=runs/retrieval
  python experiments/train.py --config=configs/retrieval.py:pair=audio_text \
      --workdir=runs/retrieval_audio
  python experiments/embed.py --workdir=runs/retrieval --split=test \
      --output=emb.parquet

Variant string (after the colon): comma-separated key=value pairs.
  pair=image_text   the image and its caption (default)
  pair=audio_text   the spoken transcript and the transcript's text
  pair=all          image, audio and text (the caption), all three pairs;
                    the audio says a claim that is the caption half of the
                    time, else the caption with one word made false
  loss=softmax|sigmoid   CLIP's or SigLIP's loss (default softmax)
  image=, audio=, text=, size=, mode=   as in configs/default.py
  text=minilm       the all-MiniLM-L6-v2 text tower and its WordPiece ids
                    (configs/minilm.py), mean-pooled and L2-normalised as
                    its sentence embeddings are, with
  init=pretrained|scratch   its weights or a random initialisation (default
                    pretrained)
The label is 'num_objects' (one, two, three), for zero-shot classification
from prompts (the zero_shot evaluator, mmjax/evaluators/embedding.py); it is not trained.
"""
from configs import default
from configs import minilm
from mmjax.tasks import retrieval

PAIRS = {
    'image_text': (('image', 'text'),),
    'audio_text': (('audio', 'text'),),
    'all': (('image', 'text'), ('audio', 'text'), ('image', 'audio')),
}
# The text each pair is about: an image's caption; the words the audio says.
TEXT_FEATURE = {'image_text': 'caption', 'audio_text': 'transcript',
                'all': 'caption'}
KEYS = ('pair', 'loss', 'image', 'audio', 'text', 'size', 'mode', 'init')


def get_config(arg=None):
  variant = default.parse_variant(arg, KEYS)
  pair = variant.pop('pair', 'image_text')
  loss = variant.pop('loss', 'softmax')
  init = variant.pop('init', None)
  text = variant.pop('text', 'lstm')
  if init is not None and text != 'minilm':
    raise ValueError('config variant init= goes with text=minilm only')
  if pair not in PAIRS:
    raise ValueError(f'config variant pair={pair!r}: expected one of '
                     f'{", ".join(PAIRS)}')
  pairs = PAIRS[pair]
  modalities = [m for m in ('image', 'audio', 'text')
                if any(m in p for p in pairs)]
  c = default.get_config(','.join(
      [f'modalities={"+".join(modalities)}', 'label=num_objects'] +
      [f'{k}={v}' for k, v in variant.items()]))
  c.dataset.features.text = TEXT_FEATURE[pair]
  c.model.name = 'two_tower'
  for field in ('fusion', 'head_dropout', 'modality_dropout'):
    del c.model[field]
  if text == 'minilm':
    minilm.use_minilm(c, init or 'pretrained', pooling='mean',
                      normalize=True)
  else:
    c.model.encoders.text = dict(name=text, size=c.model.encoders.text.size)
  c.task = retrieval.default_task_config()
  c.task.pairs = pairs
  c.task.loss = loss
  if loss == 'sigmoid':  # SigLIP's initial values: T = 0.1, bias -10.
    c.task.temperature, c.task.bias = 0.1, -10.0
  c.input.global_batch_size = 128
  c.num_train_steps = 1000
  if 'audio' in modalities:
    # A log-mel spectrogram of 3.75 s of audio per example costs far more
    # than a 32x32 image: a smaller budget keeps the run within 15 minutes
    # of 2 CPU cores.
    c.input.global_batch_size = 64
    c.num_train_steps = 400
  c.eval_every_steps = c.checkpoint_every_steps = c.num_train_steps // 2
  return c
