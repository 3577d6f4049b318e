"""Bad configs raise ConfigError naming the field, before anything is written."""
import os

import pytest

import tensorflow_datasets as tfds

from mmjax.data.builders import triad
from mmjax.errors import ConfigError
from mmjax.registry import DATASETS
from mmjax.experiment import train_and_evaluate


@DATASETS.register('triad_without_audio')
class TriadWithoutAudio(triad.Triad):
  """Triad's images and texts only: a model that needs audio must fail."""

  def _info(self):
    info = super()._info()
    features = {k: v for k, v in info.features.items() if k != 'audio'}
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(features),
        disable_shuffling=True)

  def _generate_examples(self, split, size):
    for key, example in super()._generate_examples(split, size):
      yield key, {k: v for k, v in example.items() if k != 'audio'}


CASES = [
    # (overrides, field named in the error, words the message must contain)
    (dict(model__encoders__text__name='gpt2'), 'model.encoders.text.name',
     ['bert', 'embedding_bag', 'lstm', 'transformer']),
    (dict(model__encoders__image__name='unet'), 'model.encoders.image.name',
     ['cnn', 'resnet', 'vit']),
    (dict(model__fusion__name='magic'), 'model.fusion.name',
     ['concat', 'gated', 'cross_attention']),
    (dict(task__name='regression'), 'task.name', ['classification']),
    (dict(optimizer__name='adagrad'), 'optimizer.name', ['adamw', 'sgd']),
    (dict(input__global_batch_size=12), 'input.global_batch_size',
     ['divisible', '8']),
    (dict(input__eval_batch_size=20), 'input.eval_batch_size', ['divisible']),
    (dict(parallel__mesh=dict(data=3, fsdp=1, tensor=1)), 'parallel.mesh',
     ['8 are available']),
    (dict(parallel__mesh=dict(data=-1, fsdp=3, tensor=1)), 'parallel.mesh',
     ['divide']),
    (dict(optimizer__flatten=True,
          parallel__mesh=dict(data=-1, fsdp=2, tensor=1)),
     'optimizer.flatten', ['replicated', 'fsdp']),
    (dict(optimizer__learning_rate=0.0), 'optimizer.learning_rate', []),
    (dict(optimizer__learning_rate=-1e-3), 'optimizer.learning_rate', []),
    (dict(num_train_steps=0), 'num_train_steps', ['positive']),
    (dict(eval_every_steps=-5), 'eval_every_steps', ['positive']),
    (dict(dataset__name='triad_without_audio'), 'model.modalities',
     ["'audio'", 'image, text']),
    (dict(model__modalities=('image', 'video')), 'model.modalities',
     ["'video'"]),
    (dict(model__encoders__audio__size='huge'), 'model.encoders.audio.size',
     ['tiny', 'small']),
    (dict(parallel__mode='pjit'), 'parallel.mode', ['jit', 'pmap']),
    (dict(parallel__tower_rules=dict(smell=())),
     'parallel.tower_rules.smell', ['image', 'audio', 'text', 'video']),
    (dict(max_consecutive_nonfinite_steps=0),
     'max_consecutive_nonfinite_steps', ['positive']),
    (dict(dataset__name='imagenet21k'), 'dataset.name', ['triad']),
    (dict(dataset__features__label='no_such_feature'),
     'dataset.features.label', ['image', 'text']),
    (dict(input__pp_train='resize(32)|sharpen'), 'input.pp_train',
     ['decode_image', 'tokenize']),
    (dict(input__pp_train='resize(size=-3)'), 'input.pp_train',
     ['positive']),
    (dict(input__pp_eval='flip_lr'), 'input.pp_eval', ['deterministic']),
    (dict(input__pp_train='tokenize(8, tokenizer="bpe")'), 'input.pp_train',
     ['sentencepiece']),
    (dict(model__encoders__audio__features='precomputed'),
     'model.encoders.audio.features', ['audio_features']),
    (dict(model__fusion__depth=2), 'model.fusion.depth', ['hidden_dim']),
    (dict(optimizer__lr=0.1), 'optimizer.lr', ['learning_rate']),
    (dict(model__encoders__text__width=8), 'model.encoders.text.width',
     ['dim']),
]


@pytest.mark.parametrize('overrides,field,words', CASES,
                         ids=[c[1] + ':' + str(list(c[0].values())[0])
                              for c in CASES])
def test_bad_config_raises_before_writing(make_config, tmp_path, overrides,
                                          field, words):
  workdir = str(tmp_path / 'run')
  with pytest.raises(ConfigError) as error:
    train_and_evaluate(make_config(**overrides), workdir, progress=False)
  assert error.value.field == field
  for word in words:
    assert word in str(error.value)
  assert not os.path.exists(workdir)
