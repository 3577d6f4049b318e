"""Fixtures for the data tests, on the session's 'tiny' default dataset (see
tests/conftest.py)."""
import pytest

from mmjax import data


@pytest.fixture
def config(make_config):
  return make_config()


@pytest.fixture
def spec(config):
  return data.DatasetSpec(config.dataset, config.model.modalities)


@pytest.fixture
def pp(config, spec):
  """The default config's evaluation preprocessing (deterministic)."""
  return data.preprocessing(config.input, spec)[1]
