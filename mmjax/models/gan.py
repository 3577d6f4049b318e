"""A text-conditioned GAN: a FiLM-conditioned convolutional generator, a
spectrally normalised projection discriminator (Miyato & Koyama, 2018) and an
exponential moving average (EMA) of the generator for evaluation.

Config (`config.model` with name 'gan'): `modalities` (exactly
('image', 'text')), `encoders` (only `encoders.text` is used: the generator
and the discriminator each own a text encoder of that config), `noise_dim`,
`gen_width` (the generator's base channels), `disc_width` (the
discriminator's), `dim` (sentence-embedding width), `matching_aware`
(real images with mismatched captions as extra fakes, Reed et al. 2016),
`dtype`, `param_dtype`, and `remat`, `scan_layers`, `attention` (the
BlockOptions of transformer text encoders). The image size and channels
come from the example batch at init.

Parameters: three top-level subtrees, 'generator', 'discriminator' and
'generator_ema' (a copy of 'generator' at init that no optimizer owns;
`mmjax.train.adversarial` moves it towards 'generator' after every step).
The discriminator's spectral-norm power-iteration state (`u`, `sigma`) lives
in the 'batch_stats' collection, which the train step threads as mutable.
"""
import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
from flax.linen import transforms
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.errors import ConfigError, check_fields
from mmjax.models import layers
from mmjax.models.encoders import check_encoder_config, model_encoder
from mmjax.models.image import conv
from mmjax.registry import MODELS

Batch = Mapping[str, jax.Array]
FIELDS = ('name', 'modalities', 'encoders', 'noise_dim', 'gen_width',
          'disc_width', 'dim', 'matching_aware', 'dtype', 'param_dtype',
          'remat', 'scan_layers', 'attention', 'conv_kernel_grad')
DEFAULTS = dict(noise_dim=64, gen_width=64, disc_width=64, dim=64,
                matching_aware=True, dtype='float32', param_dtype='float32')
MODALITIES = ('image', 'text')
EMA = 'generator_ema'
BASE_SIZE = 4  # The generator starts, and the discriminator ends, at 4 x 4.


class SpectralNorm(nn.SpectralNorm):
  """`nn.SpectralNorm` for layers whose parameters carry logical axis names.

  Flax's wrapper maps over every leaf of the layer's variables, so it walks
  into `nn.Partitioned` boxes and fails on their attribute path; this one
  normalises the boxed value and keeps the box, so the layer's parameters
  stay logically named (and sharded) like every other parameter. Everything
  else (power iteration, `u` / `sigma` in 'batch_stats', `update_stats`) is
  Flax's.
  """

  @nn.compact
  def __call__(self, *args, update_stats: bool, **kwargs):
    def normalize(path, leaf):
      if isinstance(leaf, nn.meta.AxisMetadata):
        return leaf.replace_boxed(self._spectral_normalize(
            path, leaf.unbox(), update_stats=update_stats))
      return self._spectral_normalize(path, leaf, update_stats=update_stats)

    return transforms.map_variables(
        lambda layer: layer(*args, **kwargs),
        trans_in_fn=lambda vs: jax.tree_util.tree_map_with_path(
            normalize, vs,
            is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata)),
        init=self.is_initializing(), mutable=True)(self.layer_instance)


def check_image_shape(shape: Sequence[int]) -> Tuple[int, int]:
  """(size, channels) of images [B, H, W, C]; ValueError unless H == W is a
  power of two >= 8 (the generator doubles 4 x 4 up to it and the
  discriminator halves it back)."""
  if len(shape) != 4:
    raise ValueError(f"model 'gan' takes images [batch, height, width, "
                     f'channels]; got shape {tuple(shape)}. Set input.pp_train '
                     '(and input.pp_eval) to produce them.')
  _, height, width, channels = shape
  if (height != width or height < 2 * BASE_SIZE or
      height & (height - 1)):
    raise ValueError(f"model 'gan' needs square images whose size is a power "
                     f'of two >= {2 * BASE_SIZE}; got images of shape '
                     f'{tuple(shape)}. Resize them in input.pp_train (and '
                     'input.pp_eval), e.g. to 32 x 32.')
  return height, channels


class CaptionModule(nn.Module):
  """The fields of a module that owns a text encoder (`model_encoder`) and
  embeds captions into `dim` (`_encode_text`): the generator, the
  discriminator and the GAN that builds both with its own values."""
  encoders: Mapping[str, ml_collections.ConfigDict]
  dim: int = DEFAULTS['dim']
  vocab_size: Optional[int] = None
  sample_rate: Optional[int] = None
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  def caption_fields(self) -> Dict[str, Any]:
    """This module's values of CaptionModule's fields."""
    return {f.name: getattr(self, f.name)
            for f in dataclasses.fields(CaptionModule)
            if f.name not in ('parent', 'name')}


def _encode_text(module: nn.Module, text: jax.Array,
                 text_mask: Optional[jax.Array], train: bool) -> jax.Array:
  """Sentence embeddings [B, dim] of token ids [B, T]: `module`'s text
  encoder, masked mean pool, dense 'text_proj'. Call from a compact method
  of a module with the `model_encoder` fields and `dim`."""
  tokens, mask = model_encoder(module, 'text')(text, text_mask, train=train)
  pooled = layers.masked_mean(tokens, mask)
  return layers.dense(module.dim, None, 'embed', module.dtype,
                      name='text_proj', param_dtype=module.param_dtype)(pooled)


def sample_noise(module: nn.Module, batch_size: int, dim: int) -> jax.Array:
  """z ~ N(0, I) [batch_size, dim] float32 from `module`'s 'noise' RNG
  stream, or from a fixed key when it has none (deterministic evaluation)."""
  key = (module.make_rng('noise') if module.has_rng('noise')
         else jax.random.key(0))
  return jax.random.normal(key, (batch_size, dim), jnp.float32)


class GeneratorBlock(nn.Module):
  """[B, h, w, C] -> [B, 2h, 2w, features]: nearest upsample, 3x3 conv,
  GroupNorm, FiLM from `cond` [B, K], ReLU."""
  features: int
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    x = jax.image.resize(x, (batch, 2 * height, 2 * width, channels),
                         'nearest')
    # No bias: the normalisation below removes it, leaving it a zero
    # gradient that Adam would turn into noise-driven full-size steps.
    x = conv(self.features, (3, 3), use_bias=False, dtype=self.dtype,
             name='conv', param_dtype=self.param_dtype)(x)
    # GroupNorm rather than BatchNorm: no running statistics, so samples do
    # not depend on the rest of the batch and the generator (and its EMA)
    # has no 'batch_stats'. No affine of its own: FiLM supplies it.
    x = nn.GroupNorm(num_groups=math.gcd(self.features, 32), use_bias=False,
                     use_scale=False, dtype=self.dtype,
                     param_dtype=self.param_dtype, name='norm')(x)
    film = layers.dense(2 * self.features, None, 'channels', self.dtype,
                        name='film', param_dtype=self.param_dtype)(cond)
    gamma, beta = jnp.split(film[:, None, None, :], 2, axis=-1)
    return nn.relu(x * (1 + gamma) + beta)


class Generator(CaptionModule):
  """Text and noise -> images [B, size, size, channels] in [-1, 1] (float32).

  The noise z [B, noise_dim] is given, or drawn by `sample_noise`: N(0, I)
  from the 'noise' RNG stream, or from a fixed key when there is none.
  Dense(cond) makes a 4 x 4 x 4*width map, cond = concat(z, sentence
  embedding); each block doubles the size and halves the channels (at least
  `width`), FiLM-conditioned on cond. `size` and `channels` are the images'.
  """
  _: dataclasses.KW_ONLY
  size: int
  channels: int
  noise_dim: int = 64
  width: int = 64

  @nn.compact
  def __call__(self, text: jax.Array, text_mask: Optional[jax.Array] = None,
               noise: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    """text: int [B, T] token ids; text_mask: [B, T] or None; noise: float
    [B, noise_dim], or None to draw it (`sample_noise`)."""
    embedding = _encode_text(self, text, text_mask, train)
    z = (sample_noise(self, text.shape[0], self.noise_dim) if noise is None
         else noise)
    cond = jnp.concatenate([z.astype(self.dtype),
                            embedding.astype(self.dtype)], axis=-1)
    features = 4 * self.width
    # The caption enters at the input as well as through every block's FiLM,
    # as in text-to-image GANs since Reed et al. (2016): through FiLM alone,
    # the first digits run picked up the conditioning only slowly.
    x = layers.dense(BASE_SIZE * BASE_SIZE * features, None, 'channels',
                     self.dtype, name='input_proj',
                     param_dtype=self.param_dtype)(cond)
    x = x.reshape(-1, BASE_SIZE, BASE_SIZE, features)
    for i in range(int(math.log2(self.size // BASE_SIZE))):
      features = max(features // 2, self.width)
      x = GeneratorBlock(features, self.dtype, self.param_dtype,
                         name=f'block{i}')(x, cond)
    x = conv(self.channels, (3, 3), dtype=self.dtype, name='out_conv',
             param_dtype=self.param_dtype)(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(CaptionModule):
  """Images [N, H, W, C] and captions -> logits [N] (float32), a projection
  discriminator: SN-Dense(1)(h) + <h, SN-Dense(F)(e)> for image features h
  [N, F] and sentence embedding e [N, dim].

  Every convolution and the two output layers are spectrally normalised
  (`update_stats`: advance the power iteration in 'batch_stats').
  """
  width: int = 64

  @nn.compact
  def __call__(self, images: jax.Array, text: jax.Array,
               text_mask: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    """images: float [N, H, W, C]; text: int [N, T]; text_mask: [N, T]."""
    def sn(layer, x):
      return SpectralNorm(layer, name=f'{layer.name}_sn')(
          x, update_stats=train)

    def sn_conv(features, strides, name, x):
      return nn.leaky_relu(sn(conv(
          features, (3, 3), strides, dtype=self.dtype, name=name,
          param_dtype=self.param_dtype), x), 0.2)

    size = images.shape[1]
    features = self.width
    x = sn_conv(features, (1, 1), 'conv_in', images.astype(self.dtype))
    for i in range(int(math.log2(size // BASE_SIZE))):
      features = self.width * min(2 ** (i + 1), 8)
      x = sn_conv(features, (2, 2), f'down{i}', x)
    x = sn_conv(features, (1, 1), 'conv_out', x)
    # Sum (not mean) pooling, as in the SNGAN / projection discriminator.
    h = x.astype(jnp.float32).sum(axis=(1, 2)).astype(self.dtype)
    embedding = _encode_text(self, text, text_mask, train)
    unconditional = sn(layers.dense(1, 'channels', None, self.dtype,
                                    name='linear',
                                    param_dtype=self.param_dtype), h)[:, 0]
    projection = sn(layers.dense(features, 'embed', 'channels', self.dtype,
                                 name='embed',
                                 param_dtype=self.param_dtype), embedding)
    return (unconditional.astype(jnp.float32) +
            (h * projection).astype(jnp.float32).sum(axis=-1))


@MODELS.register('gan')
class GAN(CaptionModule):
  """Generator, discriminator and the generator's EMA (see module docstring).

  `__call__(batch, train=...)` takes `batch['image']` float [B, H, W, C] in
  [-1, 1], `batch['text']` int [B, T] and optional `batch['text_mask']`, and
  returns a dict of float32 arrays: 'fake_images' [B, H, W, C] (from the EMA
  generator when not training), 'real_logits', 'fake_logits' and, with
  `matching_aware`, 'mismatch_logits' (real images, captions of the next
  row), each [B].
  """
  # Images are generated and judged, never encoded by an image tower.
  encoded_modalities = ('text',)
  noise_dim: int = DEFAULTS['noise_dim']
  gen_width: int = DEFAULTS['gen_width']
  disc_width: int = DEFAULTS['disc_width']
  matching_aware: bool = DEFAULTS['matching_aware']

  def _generator(self, size: int, channels: int, **kwargs) -> Generator:
    return Generator(size=size, channels=channels, noise_dim=self.noise_dim,
                     width=self.gen_width, **self.caption_fields(), **kwargs)

  def _ema_image_shape(self) -> Tuple[int, int]:
    """(size, channels) the generator was initialised for, read from the
    EMA parameters' shapes (for `generate`, which sees no images)."""
    ema = self.get_variable('params', EMA)
    if ema is None:
      raise ValueError("GAN.generate needs the model's variables (from "
                       'GAN.init on a batch with images).')
    ema = nn.meta.unbox(ema)
    blocks = sum(1 for name in ema if name.startswith('block'))
    return BASE_SIZE * 2 ** blocks, ema['out_conv']['kernel'].shape[-1]

  @nn.compact
  def _forward(self, batch: Batch, *, train: bool, discriminate: bool,
               ema: bool, fakes_only: bool = False) -> Dict[str, jax.Array]:
    text, text_mask = batch['text'], batch.get('text_mask')
    if 'image' in batch:
      size, channels = check_image_shape(batch['image'].shape)
    else:
      size, channels = self._ema_image_shape()
    outputs = {}
    # Drawn here, once, so that the generator and its EMA given the same
    # 'noise' key sample the same z.
    noise = sample_noise(self, text.shape[0], self.noise_dim)
    initializing = self.is_initializing()
    if initializing or not ema:
      generator = self._generator(size, channels, name='generator')
      outputs['fake_images'] = generator(text, text_mask, noise, train=train)
    # The EMA is one parameter holding a copy of the generator's (boxed)
    # parameter tree, so it starts bitwise equal to it and keeps its logical
    # axis names (sharded alike). Read directly when it exists: `self.param`
    # would trace its init (the generator's parameters) to check shapes.
    if self.has_variable('params', EMA):
      ema_params = nn.meta.unbox(self.get_variable('params', EMA))
    else:  # Initializing: the generator above has just made its parameters.
      ema_params = self.param(
          EMA, lambda _: jax.tree.map(lambda x: x,
                                      generator.variables['params']))
    if ema and not initializing:
      # The same generator applied to the EMA parameters, as a pure function.
      ema_generator = self._generator(size, channels, parent=None)
      outputs['fake_images'] = ema_generator.apply(
          {'params': ema_params}, text, text_mask, noise, train=False)
    if not discriminate:
      return outputs

    images = batch['image'].astype(jnp.float32)
    names = ['real_logits', 'fake_logits']
    parts = [images, outputs['fake_images']]
    texts, masks = [text, text], [text_mask, text_mask]
    if fakes_only:
      names, parts, texts, masks = names[1:], parts[1:], texts[1:], masks[1:]
    elif self.matching_aware:
      names.append('mismatch_logits')
      # Real images with the captions of the next row: a real-looking image
      # that does not match its caption is a fake too.
      parts.append(images)
      texts.append(jnp.roll(text, 1, axis=0))
      masks.append(None if text_mask is None else
                   jnp.roll(text_mask, 1, axis=0))
    # One call on the concatenation, so that the spectral-norm power
    # iteration advances once per apply, not once per part.
    logits = Discriminator(width=self.disc_width, **self.caption_fields(),
                           name='discriminator')(
        jnp.concatenate(parts), jnp.concatenate(texts),
        None if text_mask is None else jnp.concatenate(masks), train=train)
    outputs.update(zip(names, jnp.split(logits, len(parts))))
    return outputs

  def __call__(self, batch: Batch, *, train: bool,
               group: Optional[str] = None) -> Dict[str, jax.Array]:
    """See the class docstring; `train` False: fakes from the EMA. `group`:
    the parameter group a train update changes (`mmjax.train.adversarial`);
    for 'generator' the discriminator scores the generated images only, all
    the generator's loss reads ('fake_images' and 'fake_logits')."""
    return self._forward(batch, train=train, discriminate=True,
                         ema=not train, fakes_only=group == 'generator')

  def generate(self, text: jax.Array, text_mask: Optional[jax.Array] = None,
               *, ema: bool = True) -> jax.Array:
    """Samples images float32 [B, H, W, C] in [-1, 1] for token ids [B, T]
    (noise from the 'noise' RNG, else fixed); `ema`: with the EMA generator,
    else the trained one. Call through `model.apply(variables, text,
    rngs={'noise': key}, method=GAN.generate)`."""
    batch = {'text': text}
    if text_mask is not None:
      batch['text_mask'] = text_mask
    return self._forward(batch, train=False, discriminate=False,
                         ema=ema)['fake_images']

  @staticmethod
  def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a field the GAN does not take, a task other
    than 'gan', modalities other than ('image', 'text'), a missing or bad
    text encoder, or a width that is not a positive integer."""
    mc = config.model
    check_fields(mc, FIELDS, 'model', "model 'gan'")
    if config.task.name != 'gan':
      raise ConfigError('task.name', "model 'gan' generates images, which "
                        f"task 'gan' trains; got {config.task.name!r}.")
    if tuple(mc.modalities) != MODALITIES:
      raise ConfigError('model.modalities', f"model 'gan' takes images and "
                        f'captions: {MODALITIES}; got {tuple(mc.modalities)}.')
    if 'text' not in mc.encoders:
      raise ConfigError('model.encoders.text', "model 'gan' needs a text "
                        'encoder for its generator and discriminator.')
    check_encoder_config('text', mc.encoders.text)
    for field in ('noise_dim', 'gen_width', 'disc_width', 'dim'):
      value = mc.get(field, DEFAULTS[field])
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f'model.{field}', f'got {value!r}; expected a '
                          'positive integer.')
    if not isinstance(mc.get('matching_aware', True), bool):
      raise ConfigError('model.matching_aware', 'got '
                        f'{mc.matching_aware!r}; expected True or False.')

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, *,
                  num_outputs: int, **dataset_fields) -> 'GAN':
    """The GAN of `config.model`; `dataset_fields` (vocab_size, sample_rate,
    bn_axis_name) come from the dataset and the runner."""
    del num_outputs  # No classification head.
    mc = config.model
    get = lambda field: mc.get(field, DEFAULTS[field])  # noqa: E731
    return cls(encoders={'text': mc.encoders.text},
               noise_dim=get('noise_dim'), gen_width=get('gen_width'),
               disc_width=get('disc_width'), dim=get('dim'),
               matching_aware=get('matching_aware'),
               dtype=jnp.dtype(get('dtype')),
               param_dtype=jnp.dtype(get('param_dtype')),
               block_options=layers.BlockOptions.from_config(mc),
               **dataset_fields)
