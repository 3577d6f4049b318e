"""Test set-up: 8 forced CPU devices, set before JAX is imported anywhere."""
import os

from mmjax import host_memory

# Before anything imports NumPy, as the scripts do: mmjax/host_memory.py.
host_memory.retain_freed_memory()

from cpu_devices import xla_flags  # noqa: E402

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' ' + xla_flags(8)).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402  (after the XLA flags above)


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'slurm: needs a local SLURM cluster (tests/slurm_cluster.py); '
      '`make test-slurm` runs them, `make test` leaves them out')


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA compilation cache for the session's test processes
  and the scripts they start: tests build the same tiny steps in many
  processes and Experiments, and a jit cache lives only as long as its
  function (`pytest -n 2 tests/train/test_loop.py test_nonfinite.py
  test_parallel.py`: 247 s without, 209 s with it). Tests that give a run
  its own `compilation_cache_dir` still get theirs."""
  import jax
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent  # Shared by the workers of this run.
  directory = str(base / 'xla_cache')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = directory
  for name in ('jax_persistent_cache_min_compile_time_secs',
               'jax_persistent_cache_min_entry_size_bytes'):
    os.environ[name.upper()] = '0'
    jax.config.update(name, 0)
  jax.config.update('jax_compilation_cache_dir', directory)
  return directory


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS data_dir holding the 'tiny' config of the default dataset, built
  once per session (other tests add datasets to it as they need them)."""
  from configs import default
  from mmjax import data
  directory = str(tmp_path_factory.mktemp('tfds'))
  config = default.get_config()
  config.dataset.builder_config, config.dataset.data_dir = 'tiny', directory
  data.prepare(config)
  return directory


@pytest.fixture
def make_config(data_dir):
  """Builds a tiny, fast config: `make_config('fusion=gated', num_train_steps=2)`.

  Keyword overrides use '__' for nesting: `optimizer__learning_rate=0.1`.
  """
  from configs import default
  from tiny import set_fields

  def make(arg=None, **overrides):
    # All three modalities and the 4-class label, so that every test runs
    # every modality's path; `arg` may override any of these.
    c = default.get_config(','.join(filter(None, [
        'modalities=image+audio+text,label=label,fusion=concat', arg])))
    c.dataset.builder_config = 'tiny'
    c.dataset.data_dir = data_dir
    c.input.global_batch_size = 16
    c.input.eval_batch_size = 32  # 'tiny' test split (100) leaves a padded batch.
    c.num_train_steps = 4
    c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
    c.optimizer.warmup_steps = 1
    return set_fields(c, **overrides)

  return make
