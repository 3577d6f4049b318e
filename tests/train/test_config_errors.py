"""Bad configs raise ConfigError naming the field, before anything is written."""
import os

import pytest

from mmjax.data.datasets import TriadSpec
from mmjax.errors import ConfigError
from mmjax.registry import DATASETS
from mmjax.train.loop import train_and_evaluate


@DATASETS.register('triad_without_audio')
class _TriadWithoutAudio(TriadSpec):
  """A dataset that lacks one modality, to check that a model needing it fails."""
  modalities = ('image', 'text')


CASES = [
    # (overrides, field named in the error, words the message must contain)
    (dict(model__encoders__text__name='bert'), 'model.encoders.text.name',
     ['embedding_bag', 'lstm', 'transformer']),
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
    (dict(dataset__name='imagenet21k'), 'dataset.name', ['triad']),
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
