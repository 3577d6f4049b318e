"""Fixtures for the data tests, on the session's 'tiny' triad (see tests/conftest.py)."""
import pytest

from configs import default
from mmjax import data  # noqa: F401  (registers datasets)
from mmjax.registry import DATASETS


@pytest.fixture
def dataset_config(data_dir):
  """`config.dataset` of the default config, reading 'tiny' from data_dir."""
  cfg = default.get_config().dataset
  cfg.builder_config, cfg.data_dir = 'tiny', data_dir
  return cfg


@pytest.fixture
def spec(dataset_config):
  return DATASETS.get(dataset_config.name, field='dataset.name')(dataset_config)
