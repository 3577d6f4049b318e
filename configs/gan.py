"""Text-to-image GAN (mmjax/models/gan.py, mmjax/tasks/gan.py) on
scikit-learn's real handwritten digits, each image conditioned on its digit's
word ('digits' builder config 'clean'; the 8x8 images upscaled), or on
single-object 'scenes' ('single': 32x32, "a red circle").

  python experiments/train.py --config=configs/gan.py:classifier \
      --workdir=runs/digits_classifier
  python experiments/train.py \
      --config=configs/gan.py:judge=runs/digits_classifier --workdir=runs/gan
  python experiments/sample.py --workdir=runs/gan --text=seven --n=16 \
      --out=seven.png

The first run trains the image-only digit classifier that the 'gan'
evaluator (mmjax/evaluators/gan.py) judges generated images with; the second
trains the GAN and evaluates it with that classifier (conditional accuracy,
Fréchet distance in its features, a sample grid per evaluation).

On scenes the judge is a retrieval model of the same images and captions
(R-precision); colour and shape are read from the pixels:

  python experiments/train.py --config=configs/gan.py:data=scenes,retrieval \
      --workdir=runs/scenes_retrieval
  python experiments/train.py \
      --config=configs/gan.py:data=scenes,judge=runs/scenes_retrieval \
      --workdir=runs/gan_scenes

Variant string (after the colon): comma-separated key=value pairs, or
`classifier` / `retrieval`.
  data=digits|scenes   the images (default digits)
  classifier     digits: the image-only classifier of the same images
  retrieval      scenes: the image-caption two-tower model of the same
                 images and captions
  judge=WORKDIR  that run: adds the 'gan' evaluator
  size=16|32     digits: image size (default 16); scenes are 32
  text=NAME      the caption encoder of generator and discriminator
                 (default embedding_bag over the digit word's UTF-8 bytes,
                 or over the scene caption's words)
"""
from configs import default
from configs import retrieval

KEYS = ('data', 'size', 'text', 'classifier', 'retrieval', 'judge')
FLAGS = ('classifier', 'retrieval')  # Variant keys given without a value.
IMAGE_SIZES = ('16', '32')
# The judge run each dataset's evaluator takes (`judge=`).
JUDGES = {'digits': 'classifier', 'scenes': 'retrieval'}


def _pp(data, size):
  if data == 'scenes':  # Native 32x32; the captions' word vocabulary.
    return dict(image=default.PP['image'], text=default.PP['text'])
  return dict(image=f'resize({size})|value_range(-1, 1)',
              text="class_text|tokenize(8, tokenizer='byte')")


def _dataset(c, data):
  if data == 'scenes':
    c.dataset.builder_config = 'single'
    c.dataset.features.update(text='caption', label='object')
  else:
    c.dataset.name, c.dataset.builder_config = 'digits', 'clean'


def get_config(arg=None):
  variant = default.parse_variant(
      ','.join(f'{a}=1' if a in FLAGS else a
               for a in (arg or '').split(',')), KEYS)
  data = variant.get('data', 'digits')
  if data not in JUDGES:
    raise ValueError(f'config variant data={data!r}: expected one of '
                     f'{", ".join(JUDGES)}')
  size = variant.get('size', '32' if data == 'scenes' else '16')
  if size not in IMAGE_SIZES or (data == 'scenes' and size != '32'):
    raise ValueError(f'config variant size={size!r}: expected one of '
                     f'{", ".join(IMAGE_SIZES)} (scenes: 32)')
  for judge in FLAGS:
    if judge in variant and JUDGES[data] != judge:
      raise ValueError(f'config variant {judge}: data={data} is judged by '
                       f'a {JUDGES[data]} run')
  if 'classifier' in variant:
    c = default.get_config('modalities=image,label=label,fusion=concat')
  elif 'retrieval' in variant:
    c = retrieval.get_config()
  else:
    c = default.get_config('modalities=image+text,label=label')
  _dataset(c, data)
  default.set_preprocessing(c, _pp(data, size))
  c.input.eval_batch_size = 128
  if 'classifier' in variant or 'retrieval' in variant:
    c.num_train_steps = 1000
    c.eval_every_steps = c.checkpoint_every_steps = 500
    return c

  c.model.name = 'gan'
  for field in ('fusion', 'head_dropout', 'modality_dropout'):
    del c.model[field]
  del c.model.encoders['image']
  del c.model.encoders['audio']
  c.model.encoders.text = dict(name=variant.get('text', 'embedding_bag'),
                               size='tiny')
  c.model.noise_dim = 64
  # 32 channels: the digits are 8x8 images upscaled, and 64 channels train
  # several times slower on a 2-core CPU.
  c.model.gen_width = 32
  c.model.disc_width = 32
  c.model.dim = 64
  c.model.matching_aware = True

  # An EMA horizon of ~200 steps suits a run of 2,000 (0.999 would still
  # carry a third of the first 1,000 steps' weights at the end).
  c.task = dict(name='gan', discriminator_steps=1, ema_decay=0.995)
  # Adam with b1 = 0 and a discriminator learning faster than the generator
  # (the two time-scale rule of Heusel et al. 2017, as in SAGAN / BigGAN).
  c.optimizer.update(dict(name='adam', learning_rate=1e-4, b1=0.0, b2=0.9,
                          warmup_steps=0, schedule='constant',
                          weight_decay=0.0, grad_clip_norm=0.0))
  c.optimizer_groups = dict(discriminator=dict(learning_rate=4e-4))
  c.num_train_steps = 2000
  c.log_every_steps = 100
  c.eval_every_steps = c.checkpoint_every_steps = 500
  if 'judge' in variant:
    judge = dict(type='gan', samples_per_class=8, every_steps=500)
    judge[JUDGES[data]] = variant['judge']
    if data == 'scenes':
      judge['pixels'] = 'scenes'
    c.evals = dict(gan=judge)
  return c
