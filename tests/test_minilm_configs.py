"""configs/minilm.py and configs/retrieval.py:text=minilm set the tower, its
ids and its learning rate together, and differ between init= arms only in
the tower's `pretrained` field."""
import pytest

from configs import minilm, retrieval


@pytest.mark.parametrize('get_config, variant, pooling', [
    (minilm.get_config, '', 'tokens'),
    (retrieval.get_config, 'text=minilm,', 'mean'),
])
def test_arms_differ_only_in_the_initialisation(get_config, variant,
                                                pooling):
  pretrained = get_config(f'{variant}init=pretrained')
  scratch = get_config(f'{variant}init=scratch')
  text = pretrained.model.encoders.text
  assert (text.name, text.size, text.pooling) == ('bert', 'minilm_l6',
                                                  pooling)
  assert text.pretrained == 'all-minilm-l6-v2'
  assert scratch.model.encoders.text.pretrained == ''
  assert "wordpiece(16, checkpoint='all-minilm-l6-v2')" in (
      pretrained.input.pp_train)
  assert pretrained.input.pp_train == pretrained.input.pp_eval
  assert pretrained.optimizer.param_learning_rates == (
      ('text_encoder/', minilm.TEXT_LEARNING_RATE),)
  scratch.model.encoders.text.pretrained = text.pretrained
  assert scratch == pretrained


@pytest.mark.parametrize('get_config, variant, match', [
    (minilm.get_config, 'init=random', 'init=.random.'),
    (retrieval.get_config, 'init=scratch', 'text=minilm only'),
])
def test_bad_init_variant_is_refused(get_config, variant, match):
  with pytest.raises(ValueError, match=match):
    get_config(variant)
