"""Converts the full-size reference cases (ResNet-18 and ResNet-50 in the
Hugging Face and torchvision layouts, ViT-B/16, CLIP ViT-B/32 vision and
text towers, random weights) with mmjax and records
the largest difference from the reference outputs in full_size.json.

    /work/refvenv/bin/python tests/golden/convert/make_convert_golden.py \
        --full_dir=/tmp/convert_full
    .venv/bin/python tests/golden/convert/check_full_size.py /tmp/convert_full

The cases are too big to commit; the tiny ones in this directory are what
the test suite checks.
"""
import json
import os
import sys

import jax
import numpy as np

from mmjax.convert import convert_file

HERE = os.path.dirname(os.path.abspath(__file__))
COMMANDS = ['/work/refvenv/bin/python tests/golden/convert/'
            'make_convert_golden.py --full_dir=/tmp/convert_full',
            '.venv/bin/python tests/golden/convert/check_full_size.py '
            '/tmp/convert_full']
# case -> (family, reference output compared with the tower's tokens, whether
# the tower pools to one token).
CASES = {
    'resnet18': ('resnet', 'last_hidden_state', False),
    'resnet50': ('resnet', 'last_hidden_state', False),
    'vit_b16': ('vit', 'pooler_output', True),
    'clip_b32_vision': ('clip_vision', 'image_embeds', True),
    'clip_b32_text': ('clip_text', 'text_embeds', True),
    'torchvision_resnet18': ('torchvision_resnet', 'last_hidden_state', False),
    'torchvision_resnet50': ('torchvision_resnet', 'last_hidden_state', False),
}
# Tensors of a case's file that are no part of its tower.
IGNORE = {'torchvision_resnet': ['fc.*']}  # The ImageNet classifier.


def check(directory, case):
  family, output, pooled = CASES[case]
  path = os.path.join(directory, case)
  converted = convert_file(family, os.path.join(path, 'model.safetensors'),
                           ignore=IGNORE.get(family, ()))
  io = np.load(os.path.join(path, 'io.npz'))
  encoder = converted.build()
  x = io['ids'] if 'ids' in io else io['pixels']
  mask = io['mask'] if 'mask' in io else None
  tokens, _ = jax.jit(lambda v, x, m: encoder.apply(v, x, m, train=False))(
      converted.variables, x, mask)
  tokens = np.asarray(tokens)[:, 0] if pooled else np.asarray(tokens)
  return {'family': family, 'encoder': converted.encoder, 'output': output,
          'max_abs_difference': float(np.abs(tokens - io[output]).max()),
          'max_abs_reference': float(np.abs(io[output]).max())}


def main(directory):
  results = {case: check(directory, case) for case in CASES}
  with open(os.path.join(HERE, 'versions.json')) as f:
    versions = json.load(f)
  with open(os.path.join(HERE, 'full_size.json'), 'w') as f:
    json.dump({'reference': versions, 'jax': jax.__version__,
               'commands': COMMANDS,
               'cases': results}, f, indent=1)
  for case, result in results.items():
    print(case, result['max_abs_difference'])


if __name__ == '__main__':
  main(sys.argv[1])
