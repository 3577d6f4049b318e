"""Text-conditioned image generation with a GAN (hinge loss).

Config (`config.task`, see `default_task_config`):
  name                 'gan'
  discriminator_steps  discriminator updates per generator update, all in
                       one train step (`mmjax.train.adversarial`).
  ema_decay            in [0, 1): the decay of the exponential moving average
                       of the generator's weights, which evaluation and
                       sampling use.

The model ('gan', mmjax/models/gan.py) returns the discriminator's logits of
the real images with their captions ('real_logits' [B]), of generated images
('fake_logits' [B]) and, when it is matching-aware, of real images with
another row's caption ('mismatch_logits' [B]), plus 'fake_images'. The
parameter groups 'discriminator' and 'generator' train with their own
optimizers (`config.optimizer_groups`, e.g. Adam with b1 = 0 and separate
learning rates, as in SAGAN and BigGAN).

Losses (Lim & Ye 2017; Miyato et al. 2018):
  discriminator  E[relu(1 - D(real))] + E[relu(1 + D(fake))]; matching-aware
                 (Reed et al. 2016), the fake term is the mean of the
                 generated and the mismatched pairs' terms.
  generator      -E[D(fake)].

Eval metrics (with the EMA generator): the two losses, and the
discriminator's accuracy on real (logit > 0) and generated (logit < 0)
images. How good the images are (conditional accuracy, Fréchet distance) is
measured by the 'gan' evaluator (mmjax/evaluators/gan.py).
"""
import numbers
from typing import Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmjax.errors import ConfigError, check_fields
from mmjax.registry import TASKS
from mmjax.tasks import base


def default_task_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='gan', discriminator_steps=1, ema_decay=0.999))


def hinge_discriminator_loss(real: jax.Array, fake: jax.Array,
                             weights: jax.Array) -> jax.Array:
  """E[relu(1 - real)] + E[relu(1 + fake)] over the rows `weights` [B]
  selects. `real`: logits [B]; `fake`: logits [k * B], k blocks of B rows in
  batch order (e.g. generated, then mismatched), each weighted like `real`.
  """
  repeats = fake.shape[0] // real.shape[0]
  return (base.weighted_mean(jax.nn.relu(1. - real), weights) +
          base.weighted_mean(jax.nn.relu(1. + fake),
                             jnp.tile(weights, repeats)))


def hinge_generator_loss(fake: jax.Array, weights: jax.Array) -> jax.Array:
  """-E[fake] over the rows `weights` [B] selects."""
  return -base.weighted_mean(fake, weights)


def _fake_logits(outputs: Mapping[str, jax.Array]) -> jax.Array:
  """[B] or, matching-aware, [2B]: the logits the discriminator should call
  fake."""
  if 'mismatch_logits' in outputs:
    return jnp.concatenate([outputs['fake_logits'],
                            outputs['mismatch_logits']])
  return outputs['fake_logits']


def _check_config(cfg: ml_collections.ConfigDict) -> Tuple[int, float]:
  defaults = default_task_config()
  check_fields(cfg, defaults, 'task', 'gan')
  steps = cfg.get('discriminator_steps', defaults.discriminator_steps)
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
    raise ConfigError('task.discriminator_steps',
                      f'must be a positive integer, got {steps!r}.')
  decay = cfg.get('ema_decay', defaults.ema_decay)
  if (not isinstance(decay, numbers.Real) or isinstance(decay, bool)
      or not 0 <= decay < 1):
    raise ConfigError('task.ema_decay',
                      f'must be a number in [0, 1), got {decay!r}.')
  return steps, float(decay)


@TASKS.register('gan')
class GAN:
  """The hinge-loss GAN task (see the module docstring)."""
  num_outputs = 0  # The model has no classification head.
  # No metric of the task measures the images (the evaluator's do); the
  # generator's loss at least rises when the discriminator wins outright.
  best_metric = 'generator_loss'
  best_mode = 'min'
  optimizer_groups = ('discriminator', 'generator')
  adversarial = True  # Trained by `mmjax.train.adversarial`.

  def __init__(self, cfg: ml_collections.ConfigDict, spec, preprocess=None):
    del spec, preprocess  # Images and captions are all the task reads.
    self.discriminator_steps, self.ema_decay = _check_config(cfg)

  def _losses(self, outputs, batch) -> Dict[str, jax.Array]:
    weights = base.example_weights(batch, outputs['fake_logits'].shape[0])
    losses = {'generator_loss': hinge_generator_loss(outputs['fake_logits'],
                                                     weights)}
    if 'real_logits' in outputs:  # Not scored for a generator update.
      losses['discriminator_loss'] = hinge_discriminator_loss(
          outputs['real_logits'], _fake_logits(outputs), weights)
    return losses

  def loss(self, outputs, batch, group: str
           ) -> Tuple[jax.Array, base.Metrics]:
    """The loss of parameter group `group` ('discriminator' or
    'generator'), and the metrics of the outputs there are: the losses and
    the mean logits of real ('real_score') and generated ('fake_score')
    images."""
    losses = self._losses(outputs, batch)
    weights = base.example_weights(batch, outputs['fake_logits'].shape[0])
    scores = {f'{kind}_score': base.weighted_mean(outputs[f'{kind}_logits'],
                                                  weights)
              for kind in ('real', 'fake') if f'{kind}_logits' in outputs}
    return losses[f'{group}_loss'], {**losses, **scores}

  def eval_stats(self, outputs, batch) -> base.Metrics:
    weights = base.example_weights(batch, outputs['real_logits'].shape[0])
    count = weights.sum()
    losses = self._losses(outputs, batch)
    return {
        **{k: v * count for k, v in losses.items()},
        'real_correct': ((outputs['real_logits'] > 0) * weights).sum(),
        'fake_correct': ((outputs['fake_logits'] < 0) * weights).sum(),
        'num_examples': count,
    }

  def finalize(self, stats: Mapping[str, np.ndarray]) -> Dict[str, float]:
    n = max(float(stats['num_examples']), 1.)
    return {
        'discriminator_loss': float(stats['discriminator_loss']) / n,
        'generator_loss': float(stats['generator_loss']) / n,
        'real_accuracy': float(stats['real_correct']) / n,
        'fake_accuracy': float(stats['fake_correct']) / n,
        'num_examples': float(stats['num_examples']),
    }
