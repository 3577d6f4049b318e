"""Default mmjax run: does the sentence describe the picture? Image + text
classification of 'scenes' (mmjax/data/builders/scenes.py) by cross-modal
attention.

The label 'text_matches' needs both modalities together: a false claim names
a colour or shape that is not in the image. Relational labels like this one
need token-level interaction: pooled-vector fusions (concat, late, ...) stay
near chance on it (docs/models.md). 'label=label' selects the dataset's
4-class label (whether the text claim and whether the spoken claim describe
the image), which needs image, text and audio.

Usage:
  python experiments/train.py --config=configs/default.py --workdir=runs/default
  python experiments/train.py --config=configs/default.py:fusion=gated,text=lstm ...
  python experiments/train.py \
      --config=configs/default.py:modalities=image+audio+text,label=label ...

Variant string (after the colon): comma-separated key=value pairs.
  fusion=NAME          fusion method: pooled-vector ones (concat, late,
                       weighted_sum, modality_attention, gated, tensor,
                       low_rank, film, bilinear, nonlocal_gate) or token-level
                       ones (cross_attention, mult, mbt, early, perceiver);
                       it sets model.fusion to the method's knobs at their
                       defaults
  image=NAME, audio=NAME, text=NAME, video=NAME   encoder per modality
  size=NAME            size variant for every encoder (tiny, small)
  modalities=a+b       modalities the model uses (default image+text)
  label=FEATURE        the dataset feature classified (default text_matches)
  mode=jit|pmap        parallel mode
Any single field is also overridable with --config.a.b=value, the chosen
fusion method's knobs included (--config.model.fusion.num_heads=8); choose
the method with the variant, not with --config.model.fusion.name, which
keeps the knobs of the config's method.
"""
import ml_collections

from mmjax.data.builders import scenes
from mmjax.models import fusion

VARIANT_KEYS = ('fusion', 'image', 'audio', 'text', 'video', 'size',
                'modalities', 'label', 'mode')
# Preprocessing ops (mmjax/data/ops) of each modality of 'scenes'; the config
# joins those the model uses ('|'-separated; docs/data.md).
PP = dict(
    image='value_range(-1, 1)',
    audio=f'decode_audio|pad_audio({scenes.MAX_AUDIO_SAMPLES})',
    text='tokenize(16)',
)


def parse_variant(arg, keys=VARIANT_KEYS):
  """'fusion=gated,text=lstm' -> {'fusion': 'gated', 'text': 'lstm'}."""
  variant = {}
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in keys:
      raise ValueError(
          f'config variant {item!r}: expected key=value with key in '
          f'{", ".join(keys)}')
    variant[key] = value
  return variant


def set_preprocessing(c, pp, pp_eval=None):
  """Sets input.pp_train and pp_eval to the ops of `pp` and `pp_eval`
  (modality -> ops; default: `pp`) for the modalities the model uses, in
  model order (an unknown modality is left to the config check, which names
  the valid ones)."""
  def join(ops):
    return '|'.join(ops[m] for m in c.model.modalities if m in ops)
  c.input.pp_train, c.input.pp_eval = join(pp), join(pp_eval or pp)


def get_config(arg=None):
  """Returns the default config, adjusted by the variant string `arg`."""
  variant = parse_variant(arg)
  size = variant.get('size', 'tiny')
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.dataset = ml_collections.ConfigDict(dict(
      name='scenes',  # One of mmjax's datasets, or any TFDS dataset in data_dir.
      builder_config='',  # '' -> the dataset's first (default) config.
      data_dir='',  # '' -> $TFDS_DATA_DIR or ~/tensorflow_datasets.
      train_split='train',
      eval_split='test',
      # Example key -> dataset feature; '' -> the feature of the same name.
      features=dict(image='', audio='', text='',
                    label=variant.get('label', 'text_matches')),
      sample_rate=0,  # Of the stored audio; 0 -> what the dataset says.
  ))
  modalities = variant.get('modalities', 'image+text').split('+')
  c.input = ml_collections.ConfigDict(dict(
      global_batch_size=64,
      eval_batch_size=256,
      num_workers=0,  # Grain worker processes; 0 reads in the main process.
      # Batches prepared and put on the devices by a background thread while
      # the current step runs; 0 prepares each when the loop asks for it.
      prefetch=2,
      # Keep each training example's output of the ops before the first
      # random one in memory (read and decoded once, not every epoch), for
      # splits that fit in memory: the batches are the same either way.
      cache=False,
      pp_train='',  # Set below by `set_preprocessing`.
      pp_eval='',
  ))

  c.model = ml_collections.ConfigDict(dict(
      # Registered model (mmjax.registry.MODELS): 'classifier' (encoders ->
      # fusion -> head) or 'two_tower' (contrastive embeddings,
      # configs/retrieval.py).
      name='classifier',
      modalities=tuple(modalities),
      dim=64,  # Common token width that every encoder is projected to.
      dtype='float32',  # Compute dtype of activations ('bfloat16': mixed).
      param_dtype='float32',  # Parameters, gradients and optimizer state.
      # Transformer blocks: rematerialisation ('none' | 'full' | 'save_dots'),
      # nn.scan over a stack's layers, attention kernel ('einsum' |
      # 'dot_product' = jax.nn.dot_product_attention).
      remat='none',
      scan_layers=False,
      attention='einsum',
      # Kernel gradients of the CNN towers' convs: 'xla' or 'offsets' (one
      # matmul per kernel offset: same values up to float32 rounding, faster
      # on XLA:CPU but for few input channels; layers.conv_offset_kernel_grad).
      conv_kernel_grad='xla',
      encoders=dict(
          image=dict(name=variant.get('image', 'cnn'), size=size),
          audio=dict(name=variant.get('audio', 'cnn'), size=size),
          text=dict(name=variant.get('text', 'embedding_bag'), size=size),
          video=dict(name=variant.get('video', 'vivit'), size=size),
      ),
      # The method's name and knobs (see its class in mmjax/models/fusion/).
      fusion=fusion.base.default_config(
          variant.get('fusion', 'cross_attention')),
      head_dropout=0.0,
      # Training only: each modality of each example is dropped (marked
      # missing) with this probability.
      modality_dropout=0.0,
  ))

  set_preprocessing(c, PP)

  c.task = ml_collections.ConfigDict(dict(
      name='classification', label_smoothing=0.0, topk=(1, 5)))

  c.optimizer = ml_collections.ConfigDict(dict(
      name='adamw',
      learning_rate=3e-3,
      warmup_steps=100,
      schedule='cosine',
      end_learning_rate_factor=0.0,
      weight_decay=1e-4,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      momentum=0.9,  # sgd only.
      nesterov=False,  # sgd only.
      grad_clip_norm=1.0,
      # adam / adamw: the moments as one flat vector, updated in one piece
      # (meshes that replicate parameters only).
      flatten=False,
      # Gradients averaged over this many micro-batches of the global batch
      # per step (the same update, a fraction of the activation memory).
      accumulation_steps=1,
      # Regular expressions of '/'-joined parameter paths, matched from the
      # start: parameters never updated (e.g. ('text_encoder/',)), and
      # ((pattern, peak learning rate), ...) for parameters that train at
      # their own rate (e.g. a pretrained tower's). See
      # mmjax/train/optimizer.py.
      frozen=(),
      param_learning_rates=(),
  ))
  # For a task that updates parameter groups in turn, each by its own
  # optimizer (e.g. a GAN's generator and discriminator): group -> fields of
  # `optimizer` that differ for that group's optimizer.
  c.optimizer_groups = ml_collections.ConfigDict()

  # Persistent XLA compilation cache: reruns skip compilation. 'auto':
  # $JAX_COMPILATION_CACHE_DIR, else ~/.cache/mmjax/xla; a path; '' = off.
  c.compilation_cache_dir = 'auto'
  c.num_train_steps = 3000
  # A step with a non-finite loss or gradient is skipped (and logged); this
  # many in a row stop the run with an error.
  c.max_consecutive_nonfinite_steps = 10
  c.log_every_steps = 50
  # Evaluators run besides the task's own evaluation, by name: see
  # mmjax/evaluators/__init__.py (e.g. {'robustness': dict(
  # type='robustness', every_steps=0)}).
  c.evals = ml_collections.ConfigDict()
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.checkpoint = ml_collections.ConfigDict(dict(
      keep_last=2,  # Most recent checkpoints kept...
      keep_best=1,  # ...plus the best ones by the task's eval metric.
      async_save=True,
      # A corrupt latest step (truncated or missing file) is an error naming
      # it; True sets it aside and resumes from the previous good step.
      fallback_on_corrupt=False,
      # A workdir of another run: a new run starts from its newest
      # checkpoint's parameters where name, shape and dtype match. Several,
      # comma-separated: each array from the first run that has it (e.g.
      # towers trained apart).
      warm_start_from='',
  ))

  c.parallel = ml_collections.ConfigDict(dict(
      mode=variant.get('mode', 'jit'),  # 'jit' (shardings over a Mesh) | 'pmap'.
      # Mesh axis sizes; one may be -1 to take the remaining devices.
      mesh=dict(data=-1, fsdp=1, tensor=1),
      # Logical axis name -> mesh axes. Parameters are sharded over whichever
      # axes have size > 1, so one set of rules serves data, fsdp and tensor
      # meshes alike; a dimension not divisible by its mesh axes is replicated.
      rules=(
          ('batch', ('data', 'fsdp')),
          ('embed', 'fsdp'),
          ('channels', 'fsdp'),
          ('mlp', 'tensor'),
          ('heads', 'tensor'),
          ('vocab', 'tensor'),
          ('kv', None),
          ('classes', None),
          ('norm', None),
      ),
      # Per tower: rules tried before `rules` for the parameters of that
      # modality's encoder and projection, e.g. to keep a small tower
      # replicated: --config.parallel.tower_rules.text="(('mlp', None),)".
      tower_rules=dict(image=(), audio=(), text=(), video=()),
  ))
  return c


SEQ2SEQ_KEYS = VARIANT_KEYS + ('decoder', 'decoding')


def seq2seq_config(arg, *, modalities, target, length, metrics, pp=None,
                   fusion_name=''):
  """A 'seq2seq' config (mmjax/models/seq2seq.py, mmjax/tasks/seq2seq.py)
  on 'scenes': `modalities` -> the text feature `target` (tokenized to
  `length` ids, one more than its longest text so the end id fits), with
  the eval `metrics` (the first selects the best checkpoint), the ops `pp`
  (modality -> ops, default PP) and the token-level fusion `fusion_name`
  ('' for none: the encoders' tokens).

  Variant keys: those of `get_config` (`fusion` a token-level method or ''
  for one modality), `decoder` (transformer, lstm or ctc) and `decoding`
  (beam or greedy).
  """
  variant = parse_variant(arg, SEQ2SEQ_KEYS)
  decoder = variant.pop('decoder', 'transformer')
  method = variant.pop('decoding', 'beam')
  fusion_name = variant.pop('fusion', fusion_name)
  c = get_config(','.join([f'modalities={"+".join(modalities)}'] + [
      f'{k}={v}' for k, v in variant.items()]))
  c.dataset.features.target = target
  c.model.name = 'seq2seq'
  for field in ('head_dropout', 'modality_dropout'):
    del c.model[field]
  c.model.fusion = (fusion.base.default_config(fusion_name) if fusion_name
                    else {'name': ''})
  c.model.decoder = dict(name=decoder, size=variant.get('size', 'small'))
  if decoder == 'transformer':
    c.model.decoder.max_len = length
  c.model.decoding = dict(method=method, beam_size=4, alpha=0.6, max_len=0)
  target_pp = f"tokenize({length}, key='target')"
  set_preprocessing(c, pp or PP)
  c.input.pp_train = '|'.join(filter(None, [c.input.pp_train, target_pp]))
  c.input.pp_eval = '|'.join(filter(None, [c.input.pp_eval, target_pp]))
  c.task = ml_collections.ConfigDict(dict(
      name='seq2seq', label_smoothing=0.1, metrics=tuple(metrics),
      best_metric=metrics[0], num_predictions=64))
  return c
