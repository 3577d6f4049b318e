"""Speech recognition on 'scenes' (mmjax/data/builders/scenes.py): a CNN over
the log-mel spectrogram of the spoken claim, a Transformer decoder (or a
CTC head) producing its words.

  python experiments/train.py --config=configs/asr.py --workdir=runs/asr
  python experiments/train.py --config=configs/asr.py:decoder=ctc ...

The audio is the 'transcript' feature spoken by one of several synthetic
speakers over white noise (mmjax/data/builders/speech.py). Eval reports word
and character error rates over the 2,048 test clips and writes predictions
to <workdir>/predictions/.

Variant string: keys of configs/default.py (audio=, size=, mode=), plus
decoder=transformer|lstm|ctc and decoding=beam|greedy (CTC always decodes
the best path).
"""
from configs import default


def get_config(arg=None):
  c = default.seq2seq_config(arg, modalities=('audio',), target='transcript',
                             length=12, metrics=('wer', 'cer'))
  # Tokens every 4 frames (64 ms), enough for CTC's blanks between words.
  c.model.encoders.audio.channels = (32, 64)
  c.input.global_batch_size = 64
  c.num_train_steps = 2000
  c.eval_every_steps = c.checkpoint_every_steps = 1000
  return c
