"""Hugging Face CLIP checkpoints -> mmjax towers: the vision tower as `vit`,
the text tower as the text `transformer`.

Reads `CLIPVisionModel(WithProjection)`, `CLIPTextModel(WithProjection)` and
full `CLIPModel` files (there, ignore the other tower: 'text_model.*',
'text_projection.*' and 'logit_scale' for the vision tower, and the
'vision_model.*', 'visual_projection.*' and 'logit_scale' for the text
tower). A config.json of a `CLIPModel` gives each tower its own part.

Vision: class token, bias-free patch embedding, a LayerNorm before the
blocks (`pre_norm`), quick GELU and LayerNorm eps 1e-5; the output is the
pooled class token (`pooler_output`: CLIP's `post_layernorm`, which is
mmjax's final LayerNorm), projected when the file has `visual_projection`
(`image_embeds`). With pooling 'tokens' the tower returns every token after
that same final LayerNorm.

Text: causal attention, quick GELU, eps 1e-5, final LayerNorm; the output is
the state at the end-of-text token (`pooling='eos'`, or 'argmax' for
configs from before transformers fixed `eos_token_id`), projected when the
file has `text_projection` (`text_embeds`). Ids are CLIP's BPE ids: the
dataset's tokenizer must be CLIP's, and the text mask must be given (id 0 is
a real token in CLIP's vocabulary, not padding).
"""
from typing import Any, Mapping, Sequence

from mmjax.convert import hf_config as hf
from mmjax.convert.mapping import CONV, Rule, dense, layer_norm
from mmjax.convert.tensors import ConversionError
from mmjax.convert.vit import encoder_layer_rules

_LAYER = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj',
          'self_attn.out_proj', 'mlp.fc1', 'mlp.fc2', 'layer_norm1',
          'layer_norm2']
# CLIP's config.json before transformers PR 24773 said eos_token_id=2; such
# configs pool at the largest id, which is CLIP's end-of-text token.
_LEGACY_EOS = 2


def _tower_config(config: Mapping[str, Any], part: str) -> Mapping[str, Any]:
  """A CLIPModel config's `part` ('vision_config', 'text_config'), or the
  config itself when it describes one tower."""
  return config[part] if part in config else config


def _projection(names: Sequence[str], name: str, config) -> int:
  """The projection width when the file has the projection `name`."""
  return (hf.field(config, 'projection_dim')
          if name + '.weight' in set(names) else 0)


def _transformer(config: Mapping[str, Any]) -> dict:
  return dict(dim=hf.field(config, 'hidden_size'),
              depth=hf.field(config, 'num_hidden_layers'),
              num_heads=hf.field(config, 'num_attention_heads'),
              mlp_dim=hf.field(config, 'intermediate_size'),
              activation=hf.activation(config),
              ln_epsilon=hf.field(config, 'layer_norm_eps'))


def _blocks(cfg, source: str, target: str) -> list:
  out = []
  for i in range(cfg['depth']):
    out += encoder_layer_rules(_LAYER, f'{source}encoder.layers.{i}.',
                               f'{target}/block{i}')
  return out


class Vision:
  """The CLIP vision tower -> mmjax `vit`."""
  MODALITY = 'image'
  PREFIXES = ('vision_model.',)
  PROBE = 'embeddings.class_embedding'

  @staticmethod
  def encoder_config(config: Mapping[str, Any],
                     names: Sequence[str] = ()) -> dict:
    config = _tower_config(config, 'vision_config')
    return dict(name='vit', patch_size=hf.field(config, 'patch_size'),
                **_transformer(config), class_token=True, pre_norm=True,
                patch_bias=False, pooling='cls',
                projection_dim=_projection(names, 'visual_projection',
                                           config))

  @staticmethod
  def example_input(config: Mapping[str, Any]):
    config = _tower_config(config, 'vision_config')
    size = hf.field(config, 'image_size')
    return (1, size, size, hf.field(config, 'num_channels', 3)), 'float32'

  @staticmethod
  def rules(cfg: Mapping[str, Any], prefix: str,
            names: Sequence[str] = ()) -> list:
    del names  # One layout.
    tower, embed = 'params/patches', f'{prefix}embeddings.'
    out = [Rule(embed + 'class_embedding', f'{tower}/cls'),
           Rule(embed + 'patch_embedding.weight',
                f'{tower}/patch_embed/kernel', CONV),
           Rule(embed + 'position_embedding.weight',
                f'{tower}/positions/table')]
    out += layer_norm(f'{prefix}pre_layrnorm', f'{tower}/pre_norm')
    out += _blocks(cfg, prefix, f'{tower}/transformer')
    out += layer_norm(f'{prefix}post_layernorm',
                      f'{tower}/transformer/ln_final')
    if cfg['projection_dim']:
      out += dense('visual_projection', 'params/projection', bias=False)
    return out


class Text:
  """The CLIP text tower -> mmjax text `transformer`."""
  MODALITY = 'text'
  PREFIXES = ('text_model.',)
  PROBE = 'embeddings.token_embedding.weight'

  @staticmethod
  def vocab_size(config: Mapping[str, Any]) -> int:
    return hf.field(_tower_config(config, 'text_config'), 'vocab_size')

  @staticmethod
  def encoder_config(config: Mapping[str, Any],
                     names: Sequence[str] = ()) -> dict:
    config = _tower_config(config, 'text_config')
    eos = hf.field(config, 'eos_token_id')
    if not isinstance(eos, int):
      raise ConversionError(f'eos_token_id {eos!r}: the text tower pools at '
                            'one end-of-text id; set it in config.json.')
    return dict(name='transformer', **_transformer(config),
                positions='learned',
                max_len=hf.field(config, 'max_position_embeddings'),
                causal=True,
                pooling='argmax' if eos == _LEGACY_EOS else 'eos',
                eos_id=eos,
                projection_dim=_projection(names, 'text_projection', config))

  @staticmethod
  def example_input(config: Mapping[str, Any]):
    del config  # Any length up to max_len builds the same variables.
    return (1, 4), 'int32'

  @staticmethod
  def rules(cfg: Mapping[str, Any], prefix: str,
            names: Sequence[str] = ()) -> list:
    del names  # One layout.
    embed = f'{prefix}embeddings.'
    out = [Rule(embed + 'token_embedding.weight',
                'params/embedding/embedding'),
           Rule(embed + 'position_embedding.weight',
                'params/positions/table')]
    out += _blocks(cfg, prefix, 'params/transformer')
    out += layer_norm(f'{prefix}final_layer_norm',
                      'params/transformer/ln_final')
    if cfg['projection_dim']:
      out += dense('text_projection', 'params/projection', bias=False)
    return out
