r"""Converts a JSONL or CSV manifest of your own data into a TFDS dataset.

  python experiments/prepare_dataset.py --manifest=data/pets.jsonl \
      --name=pets --data_dir=~/tensorflow_datasets [--sample_rate=16000] \
      [--label_names=cat,dog | --label_names=@labels.txt] [--skip_bad_rows] \
      [--overwrite] [--media_root=data | --allow_outside_root] \
      [--max_file_bytes=N] [--max_image_pixels=N] [--max_audio_seconds=S]

writes DATA_DIR/NAME/1.0.0/ (array_record). The manifest format, the stored
features and the checks are described in mmjax/data/manifest.py. Bad input
stops the run with a message naming the manifest line and file; with
--skip_bad_rows bad rows are skipped and listed in skipped_rows.jsonl. Media
paths must resolve under the manifest's directory (or --media_root), and files
above the size, pixel and duration limits are bad rows.
"""
import sys

from absl import app
from absl import flags

from mmjax.data import manifest
from mmjax.train.writers import quiet_library_logs

_MANIFEST = flags.DEFINE_string('manifest', None, 'The .jsonl / .json or .csv '
                                'manifest.')
_NAME = flags.DEFINE_string('name', None, 'The dataset name (snake_case).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'The TFDS data directory.')
_SAMPLE_RATE = flags.DEFINE_integer('sample_rate', 16000, 'Stored audio rate '
                                    '(Hz); audio is resampled to it.')
_LABEL_NAMES = flags.DEFINE_string(
    'label_names', None, "Class names, 'a,b,c' or '@file' (one per line); "
    "default: the sorted labels of the 'train' split.")
_SKIP_BAD_ROWS = flags.DEFINE_bool('skip_bad_rows', False, 'Skip and report '
                                   'bad rows instead of stopping.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing '
                               'dataset of this name.')
_MEDIA_ROOT = flags.DEFINE_string(
    'media_root', None, 'Directory every media path must resolve under '
    "(default: the manifest's); relative paths still start at the manifest's.")
_ALLOW_OUTSIDE_ROOT = flags.DEFINE_bool('allow_outside_root', False,
                                        'Accept media paths anywhere.')
_MAX_FILE_BYTES = flags.DEFINE_integer('max_file_bytes',
                                       manifest.DEFAULT_MAX_FILE_BYTES,
                                       'Largest media file (bytes).')
_MAX_IMAGE_PIXELS = flags.DEFINE_integer('max_image_pixels',
                                         manifest.DEFAULT_MAX_IMAGE_PIXELS,
                                         'Most pixels of an image.')
_MAX_AUDIO_SECONDS = flags.DEFINE_float('max_audio_seconds',
                                        manifest.DEFAULT_MAX_AUDIO_SECONDS,
                                        'Longest audio clip (seconds).')
flags.mark_flags_as_required(['manifest', 'name', 'data_dir'])
_SHOW_SKIPPED = 20  # Skipped rows printed; all are in skipped_rows.jsonl.


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  quiet_library_logs()
  try:
    label_names = (manifest.parse_label_names(_LABEL_NAMES.value)
                   if _LABEL_NAMES.value else None)
    report = manifest.prepare_manifest(
        _MANIFEST.value, _NAME.value, _DATA_DIR.value,
        sample_rate=_SAMPLE_RATE.value, label_names=label_names,
        skip_bad_rows=_SKIP_BAD_ROWS.value, overwrite=_OVERWRITE.value,
        max_file_bytes=_MAX_FILE_BYTES.value,
        max_image_pixels=_MAX_IMAGE_PIXELS.value,
        max_audio_seconds=_MAX_AUDIO_SECONDS.value,
        media_root=_MEDIA_ROOT.value,
        allow_outside_root=_ALLOW_OUTSIDE_ROOT.value)
  except manifest.ManifestError as e:
    sys.exit(f'error: {e}')
  splits = ', '.join(f'{s}: {n}' for s, n in report.num_examples.items())
  print(f'Wrote {report.dataset_dir} ({splits}; features: '
        f'{", ".join(report.features)}).')
  if report.skipped:
    print(f'Skipped {len(report.skipped)} bad row(s), listed in '
          f'{report.dataset_dir}/{manifest.SKIPPED_ROWS_FILE}:', *(
              f'  {row.reason}' for row in report.skipped[:_SHOW_SKIPPED]),
          sep='\n')


if __name__ == '__main__':
  app.run(main)
