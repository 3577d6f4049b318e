"""configs/gan.py at test size on tiny 'scenes' data, for tests in-process
and through train.py:

  --config=tests/gan_tiny.py:<data_dir>

By default the images are captioned by their class names ('tiny', 16 x 16);
`get_config(data_dir, 'data=scenes,...')` keeps configs/gan.py's scenes
captions and 32 x 32 images on 'single_tiny' (one object per scene).
"""
from configs import default
from configs import gan

PP = dict(image='resize(16)|value_range(-1, 1)',
          text="class_text|tokenize(16, tokenizer='byte')")


def shrink(c, data_dir):
  """Config `c` of configs/gan.py (any variant) at test size."""
  c.dataset.data_dir = data_dir
  c.dataset.builder_config = {'scenes': 'tiny', 'single': 'single_tiny'}.get(
      c.dataset.builder_config, c.dataset.builder_config)
  c.input.global_batch_size, c.input.eval_batch_size = 16, 32
  if c.model.name == 'gan':
    c.model.encoders.text = dict(name='embedding_bag', dim=16)
    c.model.update(noise_dim=8, gen_width=8, disc_width=8, dim=16)
  c.optimizer.warmup_steps = 0
  c.num_train_steps = 4
  c.log_every_steps = 1
  c.eval_every_steps = c.checkpoint_every_steps = 2
  return c


def get_config(data_dir, variant=''):
  c = gan.get_config(variant)
  if 'data=scenes' not in variant:
    c.dataset.name, c.dataset.builder_config = 'scenes', 'tiny'
    default.set_preprocessing(c, PP)
  return shrink(c, data_dir)
