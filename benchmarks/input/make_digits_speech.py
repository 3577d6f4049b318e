"""Writes the `digits_speech` manifest of docs/benchmarks.md (prefetch): each
FSDD recording (vendored with the av_digits builder) beside a scikit-learn
handwritten digit of the same class, chosen by a fixed seed; takes 0-4 are
the test split, FSDD's own convention. Run from the repository root; it
writes `data/digits_speech/` (manifest.jsonl, the WAVs and images/*.png).
"""
import json, os, shutil, numpy as np, sklearn.datasets
from PIL import Image
from mmjax.data.builders import av_digits
out = 'data/digits_speech'; os.makedirs(f'{out}/images', exist_ok=True)
digits = sklearn.datasets.load_digits()
rng = np.random.default_rng(0)
with open(f'{out}/manifest.jsonl', 'w') as f:
  for wav in sorted(os.listdir(f'{av_digits.FSDD_DIR}/recordings')):
    digit, _, take = wav[:-4].split('_')  # e.g. 7_jackson_32.wav
    shutil.copy(f'{av_digits.FSDD_DIR}/recordings/{wav}', out)
    i = int(rng.choice(np.flatnonzero(digits.target == int(digit))))
    image = (digits.images[i] * 255 / 16).astype(np.uint8)
    Image.fromarray(image).save(f'{out}/images/{i}.png')
    f.write(json.dumps({'split': 'test' if int(take) < 5 else 'train',
                        'image': f'images/{i}.png', 'audio': wav,
                        'label': digit}) + '\n')
