"""Every preprocessing op: output shapes, dtypes and ranges; parsing errors."""
import io

import numpy as np
import pytest
from PIL import Image

from mmjax.data import tokenizers
from mmjax.data.preprocess import Preprocess
from mmjax.errors import ConfigError
from mmjax.models import audio_frontend
from mmjax.registry import OPS

META = {'sample_rate': 8000, 'vocabulary': ('red', 'fox'), 'num_classes': 3}


def run(ops, example, seed=0, meta=META):
  pp = Preprocess.parse(ops, meta, 'input.pp_train')
  return pp(example, np.random.default_rng(seed)), pp.meta


def png(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


IMAGE = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)


def test_decode_image_reads_png_and_grey_and_missing():
  out, _ = run('decode_image', {'image': png(IMAGE)})
  np.testing.assert_array_equal(out['image'], IMAGE)
  grey = IMAGE[..., 0]
  out, _ = run('decode_image', {'image': png(grey)})
  np.testing.assert_array_equal(out['image'], np.repeat(grey[..., None], 3, -1))
  out, _ = run('decode_image(channels=1)', {'image': png(IMAGE)})
  assert out['image'].shape == (40, 60, 1)
  out, _ = run('decode_image|resize(8)', {'image': b''})
  np.testing.assert_array_equal(out['image'], np.zeros((8, 8, 3), np.uint8))


def test_resize_crop_flip():
  out, _ = run('resize((20, 30))', {'image': IMAGE})
  assert out['image'].shape == (20, 30, 3) and out['image'].dtype == np.uint8
  # Halving by area averages 2x2 blocks.
  out, _ = run('resize((20, 30), method="area")', {'image': IMAGE})
  expected = IMAGE.reshape(20, 2, 30, 2, 3).mean((1, 3))
  assert np.abs(out['image'] - expected).max() <= 1
  out, _ = run('central_crop(20)', {'image': IMAGE})
  np.testing.assert_array_equal(out['image'], IMAGE[10:30, 20:40])
  crops = [run('random_crop((10, 12))', {'image': IMAGE}, seed)[0]['image']
           for seed in range(6)]
  assert all(c.shape == (10, 12, 3) for c in crops)
  assert len({c.tobytes() for c in crops}) > 1  # Positions vary.
  for c in crops:  # Each crop is a window of the image.
    hits = [(i, j) for i in range(31) for j in range(49)
            if np.array_equal(IMAGE[i:i + 10, j:j + 12], c)]
    assert hits
  flips = [run('flip_lr', {'image': IMAGE}, seed)[0]['image']
           for seed in range(8)]
  assert any(np.array_equal(f, IMAGE[:, ::-1]) for f in flips)
  assert any(np.array_equal(f, IMAGE) for f in flips)
  out, _ = run('flip_lr(p=1.0)', {'image': IMAGE})
  np.testing.assert_array_equal(out['image'], IMAGE[:, ::-1])
  with pytest.raises(ValueError, match='smaller than the crop'):
    run('central_crop(50)', {'image': IMAGE})


def test_value_range_and_normalize():
  out, _ = run('value_range(-1, 1)', {'image': IMAGE})
  assert out['image'].dtype == np.float32
  np.testing.assert_allclose(out['image'], IMAGE / 127.5 - 1, atol=1e-6)
  out, _ = run('value_range(0, 1)', {'image': np.array([0, 255], np.uint8)})
  np.testing.assert_allclose(out['image'], [0, 1])
  out, _ = run('normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))',
               {'image': IMAGE})
  np.testing.assert_allclose(out['image'], (IMAGE / 255 - 0.5) / 0.25,
                             atol=1e-5)
  with pytest.raises(ValueError, match='resize before value_range'):
    run('value_range|resize(8)', {'image': IMAGE})


AUDIO = (np.sin(np.arange(4000) * 0.3) * 20000).astype(np.int16)


def test_decode_resample_crop_pad_audio():
  out, _ = run('decode_audio', {'audio': AUDIO})
  assert out['audio'].dtype == np.float32
  np.testing.assert_allclose(out['audio'], AUDIO / 32767, atol=1e-6)
  out, meta = run('decode_audio|resample(16000)', {'audio': AUDIO})
  assert out['audio'].shape == (8000,) and meta['sample_rate'] == 16000
  # Every other sample of the upsampled clip is (nearly) the original.
  np.testing.assert_allclose(out['audio'][200:-200:2],
                             AUDIO[100:-100] / 32767, atol=0.02)
  crops = [run('decode_audio|random_crop_audio(1000)', {'audio': AUDIO},
               seed)[0]['audio'] for seed in range(4)]
  assert all(len(c) == 1000 for c in crops)
  assert len({c.tobytes() for c in crops}) > 1
  out, _ = run('decode_audio|pad_audio(5000)', {'audio': AUDIO})
  assert out['audio'].shape == out['audio_mask'].shape == (5000,)
  assert out['audio_mask'].sum() == 4000 and not out['audio'][4000:].any()
  out, _ = run('decode_audio|pad_audio(5000)|pad_audio(3000)',
               {'audio': AUDIO})
  assert out['audio_mask'].all() and out['audio'].shape == (3000,)
  out, _ = run('decode_audio|pad_audio(100)', {'audio': AUDIO[:0]})
  assert not out['audio_mask'].any()


def test_audio_features_equal_the_model_front_end():
  example = {'audio': AUDIO}
  out, _ = run('decode_audio|pad_audio(5000)|audio_features', example)
  frontend = audio_frontend.AudioFrontend(kind='logmel', sample_rate=8000)
  waveform = (AUDIO / 32767).astype(np.float32)
  padded = np.zeros((1, 5000), np.float32)
  padded[0, :4000] = waveform
  expected, valid = frontend.apply({}, padded, np.arange(5000)[None] < 4000)
  assert out['audio'].shape == (38, 40)
  np.testing.assert_array_equal(out['audio_mask'], valid[0])
  np.testing.assert_allclose(out['audio'], expected[0], rtol=1e-4, atol=1e-4)
  out, _ = run('decode_audio|audio_features("mfcc", n_mfcc=13)', example)
  assert out['audio'].shape == (30, 13)


def test_spec_augment_masks_bands_and_spans():
  features = np.ones((50, 40), np.float32)
  out, _ = run('spec_augment(freq_masks=1, max_freq_width=8, time_masks=1, '
               'max_time_width=10)', {'audio': features}, seed=3)
  masked = out['audio'] == 0
  rows, cols = masked.all(axis=1), masked.all(axis=0)
  assert rows.sum() <= 10 and cols.sum() <= 8
  # Everything masked lies in the masked rows or columns.
  np.testing.assert_array_equal(masked, rows[:, None] | cols[None, :])
  assert features.all()  # The input is not modified.
  with pytest.raises(ValueError, match='add audio_features before it'):
    run('spec_augment', {'audio': np.ones(100, np.float32)})


def test_tokenize_word_byte_sentencepiece(tmp_path):
  out, meta = run('tokenize(4)', {'text': b'red fox owl red fox'})
  np.testing.assert_array_equal(out['text'], [2, 3, 1, 2])
  assert out['text_mask'].all() and meta['vocab_size'] == 4
  out, meta = run('tokenize(6, tokenizer="byte")', {'text': 'ab'})
  np.testing.assert_array_equal(out['text'], [98, 99, 0, 0, 0, 0])
  np.testing.assert_array_equal(out['text_mask'], [1, 1, 0, 0, 0, 0])
  assert meta['vocab_size'] == 257

  texts = [f'the {c} {s} is left of the {d} one'
           for c in ('red', 'green', 'blue') for s in ('circle', 'square')
           for d in ('red', 'blue')] * 5
  meta = {**META, 'dataset_dir': str(tmp_path),
          'train_texts': lambda key: iter(texts)}
  pp = Preprocess.parse('tokenize(12, tokenizer="sentencepiece", '
                        'vocab_size=40)', meta, 'input.pp_train')
  assert pp.meta['vocab_size'] is None  # Not trained yet.
  pp.prepare()
  pp = Preprocess.parse('tokenize(12, tokenizer="sentencepiece", '
                        'vocab_size=40)', meta, 'input.pp_train')
  assert 0 < pp.meta['vocab_size'] <= 40
  out = pp({'text': texts[0]})
  real = out['text'][out['text_mask']]
  assert len(real) > 0 and (real >= 2).all()  # No padding, no unknown.
  assert not out['text'][~out['text_mask']].any()
  model = tokenizers.SentencePieceTokenizer(
      str(tmp_path / 'sentencepiece_text_40.model'))
  np.testing.assert_array_equal(model.encode(texts[0], 12)[0], out['text'])


def test_keep_and_missing_keys():
  out, _ = run("keep('image')", {'image': IMAGE, 'text': b'x'})
  assert list(out) == ['image']
  with pytest.raises(KeyError, match="no key 'image'.*config.dataset.features"):
    run('resize(8)', {'text': b'x'})


def test_every_registered_op_is_tested():
  tested = {'decode_image', 'resize', 'central_crop', 'random_crop',
            'flip_lr', 'value_range', 'normalize', 'decode_audio', 'resample',
            'random_crop_audio', 'pad_audio', 'audio_features',
            'spec_augment', 'tokenize', 'keep',
            'wordpiece',  # In tests/data/test_wordpiece.py.
            'class_text',  # In tests/data/test_class_text.py.
            # In tests/data/test_moving_digits.py:
            'decode_video', 'resize_video', 'pad_video',
            'random_temporal_crop', 'mean_frames', 'shuffle_frames'}
  assert set(OPS.names()) == tested


@pytest.mark.parametrize('text,match', [
    ('resize(', 'cannot parse'),
    ('resize(32)|blur(3)', "unknown preprocessing op 'blur'"),
    ('resize(size=x)', 'literals'),
    ('resize(32, colour=1)', "unexpected keyword.*size, key, method"),
    ('resize(0)', 'positive'),
    ('tokenize(8, tokenizer="wordpiece")', 'sentencepiece'),
    ('resample(16000)', None),
])
def test_parse_errors_name_the_field(text, match):
  if match is None:  # resample without a dataset sample rate.
    with pytest.raises(ConfigError, match='input.pp_train: op Resample: .*'
                       'config.dataset.sample_rate'):
      Preprocess.parse(text, {}, 'input.pp_train')
    return
  with pytest.raises(ConfigError, match=f'input.pp_train.*{match}'):
    Preprocess.parse(text, META, 'input.pp_train')
