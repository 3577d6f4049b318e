"""Hugging Face `ViTModel` checkpoints -> mmjax `vit`.

Also reads `ViTForImageClassification` files (tensors under 'vit.'; ignore
'classifier.*'), in the layout `save_pretrained` writes
('encoder.layer.{i}.attention.attention.query', ...) or in the one
transformers >= 5 modules hold in memory ('layers.{i}.attention.q_proj',
...: a `torch.save(model.state_dict())` file). The tower gets a class token,
exact-erf GELU and LayerNorm eps 1e-12 (ViT's, not mmjax's defaults); with
the pooler in the file its output is the pooled token tanh(dense(class
token)) (`pooler_output`), otherwise every token (`last_hidden_state`).
"""
from typing import Any, Mapping, Sequence

from mmjax.convert import hf_config as hf
from mmjax.convert.mapping import (CONV, Rule, attention, dense, layer_norm,
                                   unsqueezed)

MODALITY = 'image'
PREFIXES = ('', 'vit.')
PROBE = 'embeddings.cls_token'
TOWER = 'params/patches'
BLOCKS = f'{TOWER}/transformer'

# Module names of one encoder layer in each layout: (layer prefix, query,
# key, value, attention output, MLP in, MLP out).
_LAYOUTS = {
    'saved': ('encoder.layer.{i}.', 'attention.attention.query',
              'attention.attention.key', 'attention.attention.value',
              'attention.output.dense', 'intermediate.dense', 'output.dense'),
    'module': ('layers.{i}.', 'attention.q_proj', 'attention.k_proj',
               'attention.v_proj', 'attention.o_proj', 'mlp.fc1', 'mlp.fc2'),
}


def encoder_config(config: Mapping[str, Any],
                   names: Sequence[str] = ()) -> dict:
  """The mmjax encoder config of the ViT a Hugging Face config describes;
  pooled when `names` (the file's tensors) include the pooler."""
  hf.require(config, 'qkv_bias', True, True)
  pooled = any(n.endswith('pooler.dense.weight') for n in names)
  return dict(name='vit', patch_size=hf.field(config, 'patch_size'),
              dim=hf.field(config, 'hidden_size'),
              depth=hf.field(config, 'num_hidden_layers'),
              num_heads=hf.field(config, 'num_attention_heads'),
              mlp_dim=hf.field(config, 'intermediate_size'),
              class_token=True, activation=hf.activation(config),
              ln_epsilon=hf.field(config, 'layer_norm_eps'),
              pooling='pooler' if pooled else 'tokens')


def example_input(config: Mapping[str, Any]):
  size = hf.field(config, 'image_size')
  return (1, size, size, hf.field(config, 'num_channels', 3)), 'float32'


def encoder_layer_rules(names: Sequence[str], source: str,
                        target: str) -> list:
  """Rules of one pre-LN encoder layer whose sublayers are `names`
  (query, key, value, attention out, MLP in, MLP out, first norm, second
  norm) under `source` -> `layers.TransformerBlock` at `target`."""
  query, key, value, out, fc1, fc2, norm1, norm2 = names
  return (attention(dict(query=source + query, key=source + key,
                         value=source + value, out=source + out),
                    f'{target}/attn') +
          dense(source + fc1, f'{target}/mlp/fc1') +
          dense(source + fc2, f'{target}/mlp/fc2') +
          layer_norm(source + norm1, f'{target}/ln_attn') +
          layer_norm(source + norm2, f'{target}/ln_mlp'))


def rules(cfg: Mapping[str, Any], prefix: str,
          names: Sequence[str] = ()) -> list:
  """One rule per variable of the `vit` tower `cfg`, from a file whose
  names start with `prefix` (layout told by `names`, the file's tensors)."""
  layout = 'module' if f'{prefix}layers.0.attention.q_proj.weight' in set(
      names) else 'saved'
  layer, *sublayers = _LAYOUTS[layout]
  embed = f'{prefix}embeddings.'
  out = [Rule(embed + 'cls_token', f'{TOWER}/cls', unsqueezed(2)),
         Rule(embed + 'position_embeddings', f'{TOWER}/positions/table',
              unsqueezed(1)),
         Rule(embed + 'patch_embeddings.projection.weight',
              f'{TOWER}/patch_embed/kernel', CONV),
         Rule(embed + 'patch_embeddings.projection.bias',
              f'{TOWER}/patch_embed/bias')]
  for i in range(cfg['depth']):
    out += encoder_layer_rules(
        [*sublayers, 'layernorm_before', 'layernorm_after'],
        prefix + layer.format(i=i), f'{BLOCKS}/block{i}')
  out += layer_norm(f'{prefix}layernorm', f'{BLOCKS}/ln_final')
  if cfg['pooling'] == 'pooler':
    out += dense(f'{prefix}pooler.dense', 'params/pooler')
  return out
