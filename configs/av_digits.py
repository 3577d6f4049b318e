"""Real handwritten digits paired with real spoken digits ('av_digits',
mmjax/data/builders/av_digits.py): image + audio by cross-modal attention,
tested on a speaker never heard in training (theo).

  python experiments/train.py --config=configs/av_digits.py --workdir=runs/avd
  python experiments/train.py --config=configs/av_digits.py:label=same ...
  python experiments/train.py --config=configs/av_digits.py \
      --config.dataset.builder_config=takes ...   # Upstream's take split.

label=digit (the default) classifies the digit that the image shows and the
recording speaks, on the 'train' / 'test' splits. label=same asks whether the
spoken digit is the written one, on the 'train_pairs' / 'test_pairs' splits,
where it is independent of each modality alone: only a comparison of image
and audio beats chance. Builder config 'named' gives captions that name the
written digit (add text to the modalities to use them). The variant string
of configs/default.py applies (fusion, encoders, modalities, label).

The recordings are the Free Spoken Digit Dataset (CC BY-SA 4.0): data built
from them carries that license (mmjax/data/builders/fsdd/LICENSE).
"""
from configs import default
from mmjax.data.builders import av_digits

PP = dict(
    image='value_range(-1, 1)',  # 8x8 grey images.
    # Recordings are 0.14 to 2.3 s long; 1 s keeps all but 20 of 3,000 whole.
    audio=f'decode_audio|pad_audio({av_digits.CLIP_SAMPLES})',
    text='tokenize(10)',  # Captions are at most 9 words.
)


def get_config(arg=None):
  label = default.parse_variant(arg).get('label', 'digit')
  c = default.get_config(','.join(filter(None, [
      f'modalities=image+audio,label={label},fusion=cross_attention', arg])))
  c.dataset.name = 'av_digits'
  if label == 'same':  # The interaction label lives on the paired splits.
    c.dataset.train_split, c.dataset.eval_split = 'train_pairs', 'test_pairs'
  default.set_preprocessing(c, PP)
  # A short schedule: `make train` trains this config on a laptop in minutes.
  c.num_train_steps = 1000
  c.eval_every_steps = c.checkpoint_every_steps = 500
  return c
