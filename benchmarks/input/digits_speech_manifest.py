r"""Writes a manifest dataset of real handwriting and speech for bench_input:
each of the 3,000 FSDD recordings (vendored in mmjax) paired with a
scikit-learn handwritten digit of the same class, as PNG + WAV files.

  python benchmarks/input/digits_speech_manifest.py --out=/tmp/digits_speech
  python experiments/prepare_dataset.py \
      --manifest=/tmp/digits_speech/manifest.jsonl --name=digits_speech \
      --data_dir=/tmp/tfds --sample_rate=8000
  python experiments/bench_input.py --workdir=benchmarks/input/digits_speech \
      --config=configs/manifest.py:name=digits_speech,modalities=image+audio,audio_seconds=1,sample_rate=8000,image_size=32 \
      --config.dataset.data_dir=/tmp/tfds

Takes 0-4 of every speaker and digit are the test split (the upstream
convention), the rest train.
"""
import json
import os
import shutil

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from sklearn import datasets

from mmjax.data.builders import av_digits

_OUT = flags.DEFINE_string('out', None, 'Directory for the manifest and media.')
flags.mark_flags_as_required(['out'])


def main(argv):
  del argv
  os.makedirs(os.path.join(_OUT.value, 'images'), exist_ok=True)
  digits = datasets.load_digits()
  rng = np.random.default_rng(0)
  recordings = os.path.join(os.path.dirname(av_digits.__file__), 'fsdd',
                            'recordings')
  rows = []
  for name in sorted(os.listdir(recordings)):
    digit, _, take = name[:-len('.wav')].split('_')
    index = rng.choice(np.flatnonzero(digits.target == int(digit)))
    image = os.path.join('images', f'{index}.png')
    pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
    Image.fromarray(pixels).save(os.path.join(_OUT.value, image))
    shutil.copy(os.path.join(recordings, name), _OUT.value)
    rows.append({'split': 'test' if int(take) < 5 else 'train',
                 'image': image, 'audio': name, 'label': digit})
  with open(os.path.join(_OUT.value, 'manifest.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)


if __name__ == '__main__':
  app.run(main)
