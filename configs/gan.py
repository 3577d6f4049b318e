"""Text-to-image GAN (mmjax/models/gan.py, mmjax/tasks/gan.py) on
scikit-learn's real handwritten digits, each image conditioned on its digit's
word ('digits' builder config 'clean'; the 8x8 images upscaled).

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

Variant string (after the colon): comma-separated key=value pairs, or
`classifier`.
  classifier     the image-only classifier of the same images
  judge=WORKDIR  that classifier's run: adds the 'gan' evaluator
  size=16|32     image size (default 16)
  text=NAME      the caption encoder of generator and discriminator
                 (default embedding_bag over the word's UTF-8 bytes)
"""
from configs import default

KEYS = ('size', 'text', 'classifier', 'judge')
IMAGE_SIZES = ('16', '32')


def _pp(size):
  return dict(image=f'resize({size})|value_range(-1, 1)',
              text="class_text|tokenize(8, tokenizer='byte')")


def get_config(arg=None):
  variant = default.parse_variant(
      ','.join(a if a != 'classifier' else 'classifier=1'
               for a in (arg or '').split(',')), KEYS)
  size = variant.get('size', '16')
  if size not in IMAGE_SIZES:
    raise ValueError(f'config variant size={size!r}: expected one of '
                     f'{", ".join(IMAGE_SIZES)}')
  if 'classifier' in variant:
    c = default.get_config('modalities=image,label=label,fusion=concat')
  else:
    c = default.get_config('modalities=image+text,label=label')
  c.dataset.name, c.dataset.builder_config = 'digits', 'clean'
  default.set_preprocessing(c, _pp(size))
  c.input.eval_batch_size = 128
  if 'classifier' in variant:
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
    c.evals = dict(gan=dict(type='gan', classifier=variant['judge'],
                            samples_per_class=8, every_steps=500))
  return c
