r"""Writes the embeddings of a split, from a saved two-tower run, to a file.

  python experiments/embed.py --workdir=runs/retrieval --split=test \
      --output=emb.parquet
  python experiments/embed.py --workdir=runs/retrieval --split=train \
      --output=train_emb.npy --step=500

One row per example of the split, in order: a column per modality (its
unit-norm embedding [D]), 'label' (the dataset label, e.g. num_objects) and
'text_ids' (the token ids) where the run has them. '.npy' writes a
structured array (np.load(path)['image']), '.parquet' a table with a
fixed-size list column per embedding. The run's config comes from
<workdir>/config.json, or from --config; the checkpoints are opened
read-only.
"""
from mmjax import host_memory

# First, before NumPy is imported: mmjax/host_memory.py says why.
host_memory.retain_freed_memory()

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

import multihost_flags
from mmjax.evaluators import embedding
from mmjax import experiment as experiment_lib
from mmjax.train.writers import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (default: the run\'s own config.json).',
    lock_config=False)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
_SPLIT = flags.DEFINE_string('split', 'test', 'Dataset split to embed.')
_OUTPUT = flags.DEFINE_string('output', None, '.npy or .parquet file.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
flags.mark_flags_as_required(['workdir', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  multihost_flags.initialize()
  quiet_library_logs()
  config = _CONFIG.value or experiment_lib.load_config(_WORKDIR.value)
  config.dataset.eval_split = _SPLIT.value
  experiment, state, step = experiment_lib.restore(config, _WORKDIR.value,
                                               _STEP.value)
  columns = embedding.export_columns(
      embedding.embed_split(experiment, state))
  if jax.process_index() == 0:
    embedding.write_embeddings(columns, _OUTPUT.value)
    logging.info('step %d, split %s: wrote %s to %s', step, _SPLIT.value,
                 ', '.join(f'{k} {list(v.shape)}' for k, v in columns.items()),
                 _OUTPUT.value)


if __name__ == '__main__':
  app.run(main)
