r"""Converts a PyTorch tower checkpoint into an mmjax warm-start checkpoint.

  python experiments/convert_weights.py --family=resnet \
      --weights=resnet-50/model.safetensors --workdir=runs/resnet50_init

Families: resnet, vit, clip_vision, clip_text (Hugging Face layouts: the
model's config.json is read from beside the weights, or --config_json) and
torchvision_resnet (a torchvision ResNet state dict: depth and width are
read from the tensors, so no config; --ignore='fc.*' leaves out its
classifier). See mmjax/convert; .pth/.pt/.bin files need PyTorch for the
conversion.
Writes <workdir>/checkpoints/0, holding the tower's variables under
<modality>_encoder as a training run saves them, and <workdir>/encoder.json,
the tower's encoder config. Set config.model.encoders.<modality> to that
dict and train with --config.checkpoint.warm_start_from=<workdir>: the
tower starts from the converted weights, everything else afresh.
"""
import json
import os

from absl import app
from absl import flags
import grain
import jax

from mmjax.convert import FAMILIES, convert_file
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.writers import quiet_library_logs

_FAMILY = flags.DEFINE_enum('family', None, list(FAMILIES),
                            'Checkpoint family.')
_WEIGHTS = flags.DEFINE_string('weights', None, '.safetensors or .pth file.')
_CONFIG_JSON = flags.DEFINE_string(
    'config_json', None, "The model's config.json (default: beside "
    '--weights).')
_IGNORE = flags.DEFINE_multi_string(
    'ignore', [], 'fnmatch pattern of tensors to leave out (e.g. '
    "'classifier.*', 'text_model.*'); repeat for several.")
_SCAN = flags.DEFINE_bool(
    'scan_layers', False, 'Stack transformer blocks for a model trained with '
    'config.model.scan_layers=True.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory (new).')
flags.mark_flags_as_required(['family', 'weights', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  quiet_library_logs()
  converted = convert_file(_FAMILY.value, _WEIGHTS.value, _CONFIG_JSON.value,
                           _IGNORE.value, _SCAN.value)
  scope = f'{converted.modality}_encoder'
  state = {name: {scope: tree}
           for name, tree in jax.device_put(converted.variables).items()}
  directory = os.path.join(_WORKDIR.value, 'checkpoints')
  if os.path.exists(directory):
    raise app.UsageError(f'{directory} exists; give a new --workdir.')
  checkpointer = Checkpointer(directory, keep_last=1, keep_best=0,
                              best_metric='', best_mode='max',
                              async_save=False)
  # A checkpoint holds a data-iterator state too; warm starts never read it.
  checkpointer.save(0, state, iter(grain.MapDataset.range(1)
                                   .to_iter_dataset()))
  checkpointer.close()
  with open(os.path.join(_WORKDIR.value, 'encoder.json'), 'w') as f:
    json.dump(converted.encoder, f, indent=1)
  print(f'config.model.encoders.{converted.modality} = '
        f'{json.dumps(converted.encoder)}')
  if converted.vocab_size:
    print(f'The dataset vocabulary must be the checkpoint\'s '
          f'({converted.vocab_size} ids).')
  print(f'then: --config.checkpoint.warm_start_from={_WORKDIR.value}')


if __name__ == '__main__':
  app.run(main)
