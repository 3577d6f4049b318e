"""Tests of the image grid and its PNG writer."""
import os

import numpy as np
import pytest
from PIL import Image

from mmjax import reporting


def test_grid_places_each_image_exactly():
  # Six 2x3 single-channel images, image i filled with 10 * (i + 1), in 2
  # rows of 3 with 1 pixel of padding.
  images = np.stack([np.full((2, 3, 1), 10 * (i + 1), np.uint8)
                     for i in range(6)])
  images[0, 0, 0, 0] = 200  # Marks image 0's top-left corner.
  grid = reporting.image_grid(images, rows=2, pad=1)
  assert grid.dtype == np.uint8
  assert grid.shape == (2 * (2 + 1) + 1, 3 * (3 + 1) + 1, 1)
  expected = np.zeros((7, 13), np.uint8)
  for i in range(6):
    row, col = divmod(i, 3)
    expected[1 + 3 * row:3 + 3 * row, 1 + 4 * col:4 + 4 * col] = 10 * (i + 1)
  expected[1, 1] = 200
  np.testing.assert_array_equal(grid[..., 0], expected)


def test_grid_without_padding_and_rgb():
  images = np.random.default_rng(0).integers(0, 256, (4, 5, 7, 3), np.uint8)
  grid = reporting.image_grid(images, rows=1, pad=0)
  np.testing.assert_array_equal(grid, np.concatenate(list(images), axis=1))


def test_float_images_map_minus_one_to_0_and_one_to_255():
  values = np.array([-3., -1., 0., 0.5, 1., 2.])
  images = values.reshape(6, 1, 1, 1).astype(np.float32)
  grid = reporting.image_grid(images, rows=1, pad=0)
  np.testing.assert_array_equal(grid[0, :, 0], [0, 0, 128, 191, 255, 255])


@pytest.mark.parametrize('channels', [1, 3])
def test_png_round_trips(tmp_path, channels):
  images = np.random.default_rng(1).uniform(-1, 1, (6, 4, 5, channels))
  grid = reporting.image_grid(images, rows=3)
  path = str(tmp_path / 'samples.png')
  reporting.write_png(path, grid)
  with Image.open(path) as image:
    assert image.mode == ('L' if channels == 1 else 'RGB')
    read = np.asarray(image)
  np.testing.assert_array_equal(read.reshape(grid.shape), grid)
  assert os.listdir(tmp_path) == ['samples.png']  # No temporary file left.


def test_bad_inputs_raise():
  images = np.zeros((5, 2, 2, 3), np.uint8)
  with pytest.raises(ValueError, match='N=5.*rows=2'):
    reporting.image_grid(images, rows=2)
  with pytest.raises(ValueError, match='C 1 or 3'):
    reporting.image_grid(np.zeros((4, 2, 2, 4), np.uint8), rows=2)
  with pytest.raises(ValueError, match='int64'):
    reporting.image_grid(np.zeros((4, 2, 2, 3), np.int64), rows=2)
  with pytest.raises(ValueError, match='uint8'):
    reporting.write_png('unused.png', np.zeros((2, 2, 3), np.float32))
