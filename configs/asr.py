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
  # Frames every 32 ms, tokens every 4 frames (128 ms, about one per word):
  # half the frames of the default hop (128) and a quarter of the CNN's
  # channels, so that it trains in minutes on 2 CPU cores.
  c.model.encoders.audio.channels = (16, 32)
  c.model.encoders.audio.hop_length = 256
  c.input.global_batch_size = 64
  c.num_train_steps = 3000
  c.eval_every_steps = c.checkpoint_every_steps = 1000
  return c
