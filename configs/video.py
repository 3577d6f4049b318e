"""Video on 'moving_digits' (mmjax/data/builders/moving_digits.py): two
handwritten digits crossing a 32 x 32 canvas, one horizontally, one
vertically, in turn; a ViViT video tower (mmjax/models/video.py).

  python experiments/train.py --config=configs/video.py --workdir=runs/video
  python experiments/train.py --config=configs/video.py:baseline=mean ...
  python experiments/train.py --config=configs/video.py:task=captioning ...

label=direction (the default; 4 classes: the way the first digit moves) and
label=first_digit (10 classes: the digit on screen first) need the order of
the frames; label=digit (the horizontally moving digit) needs motion but not
its sign. task=captioning generates the caption ('three moves left then seven
moves up') with the seq2seq model and reports BLEU-4 and CIDEr-D.

Variant string: comma-separated key=value pairs.
  mode=factorised|joint   ViViT's factorised encoder (default) or one
                          transformer over all space-time tokens
  label=direction|first_digit|digit
  task=classification|captioning
  baseline=mean|shuffle   order-blind inputs: the mean frame (a one-frame
                          video), or the frames shuffled per video in train
                          and eval
  data=default|frames16|spoken   the builder config (spoken: the first digit
                          also spoken, FSDD; add audio to the modalities)
  modalities=video[+audio], size=tiny|small, fusion=NAME, mode of parallel
  runs: parallel=jit|pmap; decoder=, decoding= (captioning)
"""
from configs import default
from mmjax.data.builders import av_digits

KEYS = ('mode', 'label', 'task', 'baseline', 'data', 'modalities', 'size',
        'fusion', 'parallel', 'decoder', 'decoding')
FRAMES = {'default': 8, 'frames16': 16, 'spoken': 8, 'tiny': 8}
BASELINE_OPS = {'': '', 'mean': '|mean_frames', 'shuffle': '|shuffle_frames'}


def preprocessing(frames: int, baseline: str = ''):
  """Modality -> ops: uint8 frames -> float32 in [-1, 1], `frames` long."""
  if baseline not in BASELINE_OPS:
    raise ValueError(f'configs/video.py: baseline must be one of mean, '
                     f'shuffle, got {baseline!r}')
  return dict(
      video=(f'decode_video|pad_video({frames}){BASELINE_OPS[baseline]}|'
             "value_range(-1, 1, key='video')"),
      audio=f'decode_audio|pad_audio({av_digits.CLIP_SAMPLES})',
  )


def get_config(arg=None):
  variant = default.parse_variant(arg, KEYS)
  data = variant.get('data', 'default')
  baseline = variant.get('baseline', '')
  passed = [f'modalities={variant.get("modalities", "video")}',
            f'size={variant.get("size", "small")}']
  passed += [f'mode={variant["parallel"]}'] if 'parallel' in variant else []
  if variant.get('task', 'classification') == 'captioning':
    passed += [f'{k}={variant[k]}' for k in ('fusion', 'decoder', 'decoding')
               if k in variant]
    c = default.seq2seq_config(
        ','.join(passed),
        modalities=tuple(variant.get('modalities', 'video').split('+')),
        target='caption', length=8, metrics=('bleu4', 'cider_d'))
    c.dataset.features.label = ''  # No class label.
  else:
    passed += [f'label={variant.get("label", "direction")}',
               f'fusion={variant.get("fusion", "concat")}']
    c = default.get_config(','.join(passed))
  c.dataset.name = 'moving_digits'
  c.dataset.builder_config = data
  # Tubelets of 2 frames x 4 x 4 pixels: a digit (8 x 8, on the 4-pixel
  # grid) covers 4 patches, and one tubelet sees it move (4 pixels a frame).
  # The mean frame is one frame: a tubelet of 1.
  c.model.encoders.video.update(
      mode=variant.get('mode', 'factorised'), patch_size=4,
      tubelet_frames=1 if baseline == 'mean' else 2)
  default.set_preprocessing(c, preprocessing(FRAMES[data], baseline))
  if c.model.name == 'seq2seq':  # The caption's ids after the inputs.
    target = "tokenize(8, key='target')"
    c.input.pp_train = f'{c.input.pp_train}|{target}'
    c.input.pp_eval = f'{c.input.pp_eval}|{target}'
  c.input.global_batch_size = 32
  c.optimizer.learning_rate = 1e-3
  c.num_train_steps = 1000
  c.eval_every_steps = c.checkpoint_every_steps = 500
  return c
