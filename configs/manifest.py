"""Your own data: a dataset converted from a manifest by
experiments/prepare_dataset.py, classified by its 'label' column.

  python experiments/prepare_dataset.py --manifest=data/pets.jsonl \\
      --name=pets --data_dir=~/tensorflow_datasets
  python experiments/train.py \\
      --config=configs/manifest.py:name=pets,modalities=image+text \\
      --config.dataset.data_dir=~/tensorflow_datasets --workdir=runs/pets

Variant string (after the colon), comma-separated key=value pairs:
  name=NAME            the dataset (--name of prepare_dataset.py); required
  modalities=a+b       the manifest's modality columns the model uses
                       (default image+text)
  image_size=N         images are resized to N x N (default 64)
  sample_rate=HZ       audio is resampled to HZ (default 16000) ...
  audio_seconds=S      ... and cropped (train: a random window) or padded to
                       S seconds (default 4)
  text_length=N        tokens per text (default 32)
  tokenizer=NAME       'sentencepiece' (default: a model of at most 1000
                       pieces trained on the train split's text, stored with
                       the dataset) or 'byte'
and the keys of configs/default.py (fusion, image, audio, text, size, mode;
label=labels for a multi-label manifest). The audio tower is the temporal
CNN 'tcnn' unless audio=NAME says otherwise: at 16 kHz and 4 s it trains
many times faster than the 2-D 'cnn' (docs/benchmarks.md, audio path).
Its CNN towers compute their kernel gradients by offsets
(model.conv_kernel_grad='offsets': float32 rounding differs from XLA's own,
and the step is faster on CPU, docs/benchmarks.md; 'xla' restores XLA's).
The splits are 'train' and 'test' (--config.dataset.eval_split=validation
to evaluate on another one).
"""
from configs import default

KEYS = ('name', 'image_size', 'sample_rate', 'audio_seconds', 'text_length',
        'tokenizer')


def preprocessing(image_size=64, sample_rate=16000, audio_seconds=4.,
                  text_length=32, tokenizer='sentencepiece'):
  """(train, eval) ops per modality for manifest datasets."""
  samples = round(audio_seconds * sample_rate)
  image = f'decode_image|resize({image_size})|value_range(-1, 1)'
  audio = f'decode_audio|resample({sample_rate})'
  text = f"tokenize({text_length}, tokenizer='{tokenizer}')"
  train = dict(image=image, text=text, audio=(
      f'{audio}|random_crop_audio({samples})|pad_audio({samples})'))
  return train, dict(train, audio=f'{audio}|pad_audio({samples})')


def get_config(arg=None):
  variant = default.parse_variant(arg, KEYS + default.VARIANT_KEYS)
  if 'name' not in variant:
    raise ValueError('configs/manifest.py needs the dataset: '
                     '--config=configs/manifest.py:name=NAME')
  variant.setdefault('audio', 'tcnn')
  c = default.get_config(','.join(
      ['label=label'] +
      [f'{k}={v}' for k, v in variant.items() if k in default.VARIANT_KEYS]))
  c.dataset.name = variant['name']
  c.model.conv_kernel_grad = 'offsets'
  numbers = dict(image_size=int, sample_rate=int, audio_seconds=float,
                 text_length=int)
  default.set_preprocessing(c, *preprocessing(
      **{k: numbers.get(k, str)(v) for k, v in variant.items()
         if k in KEYS[1:]}))
  return c
