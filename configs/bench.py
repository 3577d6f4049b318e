"""Throughput benchmark model: ViT, text transformer and audio spectrogram
transformer fused by cross-modal attention, classifying the 'triad' data.

  python experiments/bench_throughput.py --config=configs/bench.py \
      --out=benchmarks/throughput.json
  python experiments/bench_throughput.py --config=configs/bench.py:gpu ...

Variant (after the colon): 'cpu' (default; every tower 4 layers of width
256, float32) or 'gpu' (12 layers of width 768, bfloat16 compute). The fields
of configs/default.py apply, e.g. --config.model.remat=full.
"""
import ml_collections

from configs import default

SIZES = {
    'cpu': dict(depth=4, dim=256, num_heads=4, mlp_dim=1024, batch=32,
                dtype='float32'),
    'gpu': dict(depth=12, dim=768, num_heads=12, mlp_dim=3072, batch=128,
                dtype='bfloat16'),
}


def get_config(arg=None) -> ml_collections.ConfigDict:
  size = arg or 'cpu'
  if size not in SIZES:
    raise ValueError(f'configs/bench.py variant {size!r}: expected one of '
                     f'{", ".join(SIZES)}')
  s = SIZES[size]
  c = default.get_config('modalities=image+audio+text,label=label')
  tower = dict(dim=s['dim'], depth=s['depth'], num_heads=s['num_heads'],
               mlp_dim=s['mlp_dim'])
  c.model.dim = s['dim']
  c.model.dtype = s['dtype']
  c.model.encoders = dict(
      image=dict(name='vit', patch_size=4, **tower),  # 32x32 -> 64 tokens.
      # 0.5 s at 8 kHz: 32 frames x 40 mels -> 8 x 5 patches of (4, 8).
      audio=dict(name='transformer', patch_size=(4, 8), **tower),
      text=dict(name='transformer', **tower),  # 16 tokens.
  )
  c.model.fusion = dict(name='cross_attention', depth=1,
                        num_heads=s['num_heads'], mlp_dim=s['mlp_dim'])
  # The 'triad' data: its 0.5 s clips keep the audio tower's 40 patches
  # comparable to the other towers' token counts (benchmarks/throughput.md
  # was measured on it).
  c.dataset.name = 'triad'
  c.input.pp_train = c.input.pp_eval = (
      'value_range(-1, 1)|decode_audio|pad_audio(4000)|tokenize(16)')
  c.input.global_batch_size = s['batch']
  c.num_train_steps = 1000
  return c
