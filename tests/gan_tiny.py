"""configs/gan.py at test size on the tiny 'scenes' data (images captioned
by their class names), for tests in-process and through train.py:

  --config=tests/gan_tiny.py:<data_dir>
"""
from configs import default
from configs import gan

PP = dict(image='resize(16)|value_range(-1, 1)',
          text="class_text|tokenize(16, tokenizer='byte')")


def get_config(data_dir):
  c = gan.get_config()
  c.dataset.name, c.dataset.builder_config = 'scenes', 'tiny'
  c.dataset.data_dir = data_dir
  default.set_preprocessing(c, PP)
  c.model.encoders.text = dict(name='embedding_bag', dim=16)
  c.model.update(noise_dim=8, gen_width=8, disc_width=8, dim=16)
  c.input.global_batch_size, c.input.eval_batch_size = 16, 32
  c.num_train_steps = 4
  c.log_every_steps = 1
  c.eval_every_steps = c.checkpoint_every_steps = 2
  return c
