"""AV-MNIST-style fusion benchmark: handwritten digits, spoken digit words and
text clues ('digits', mmjax/data/builders/digits.py), 10 classes.

  python experiments/train.py --config=configs/digits.py --workdir=runs/digits
  python experiments/train.py --config=configs/digits.py:modalities=image ...

Every modality is informative and none suffices (logistic regressions reach
0.82 on pixels, 0.66 on log-mel, 0.40 on the clue and 0.98 on all three). The
variant string of configs/default.py applies (fusion, encoders, modalities).
"""
from configs import default
from mmjax.data.builders import digits

PP = dict(
    image='value_range(-1, 1)',  # 8x8 grey images.
    audio=f'decode_audio|pad_audio({digits.MAX_AUDIO_SAMPLES})',
    text='tokenize(8)',  # Clues are at most 6 words.
)


def get_config(arg=None):
  # The label is a digit, which each modality informs on its own: pooled
  # (concatenation) fusion of all three suits it.
  c = default.get_config(','.join(filter(None, [
      'modalities=image+audio+text,label=label,fusion=concat', arg])))
  c.dataset.name = 'digits'
  default.set_preprocessing(c, PP)
  return c
