"""Command-line flags, and the Config they build. Presets in configs/ are flagfiles of these."""

import re
import sys

from absl import flags

from trainer.core.config import AUGMENTATIONS, Config, INPUTS, LITERT_QUANTIZATIONS, \
    LR_SCALINGS, LR_SCHEDULES, MIXED_PRECISION, OPTIMIZERS, STRATEGIES, TUNE_METRICS
from trainer.core.config import FREEZES, MOMENTUM_SCALINGS
from trainer.core.errors import EXIT_USER_ERROR, UserError
from trainer.report import logs

_DEFAULTS = Config()


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines every trainer flag on `flag_values` (absl's global FLAGS by default).

  Each flag is a Config field of the same name, with the Config default.
  """
  def define(kind, name, help_text):
    getattr(flags, f'DEFINE_{kind}')(name, getattr(_DEFAULTS, name), help_text,
                                     flag_values=flag_values)

  define('string', 'dataset', 'TFDS image classification data set (image/label features), '
         '"image_folder" for your own images in --data_dir, or "synthetic" for random '
         'device-resident data.')
  define('string', 'data_dir', 'TFDS data folder (local or any TF filesystem, e.g. gs://); '
         'default: TFDS\'s own (~/tensorflow_datasets). With --dataset=image_folder: the '
         'folder holding train/<class>/ and test/<class>/.')
  define('string', 'train_split', 'TFDS split to train on.')
  define('string', 'eval_split', 'TFDS split to evaluate on after each epoch.')
  define('string', 'model_dir', 'Run folder: config, results, checkpoints, export, '
         'summaries; default: the parent of $AIP_MODEL_DIR (a Vertex AI job\'s base output '
         'folder), else runs/<timestamp>.')
  # Strings, not enums: Config.validate() gives the one-line error for a wrong choice.
  define('string', 'strategy', f'tf.distribute strategy: {", ".join(STRATEGIES)}.')
  define('integer', 'num_cpu_devices', 'With --strategy=mirrored: split the CPU into this '
         'many logical devices (replicas); 0 uses the GPUs.')
  define('string', 'tpu', 'With --strategy=tpu: TPU name or grpc:// address; empty for the '
         'TPU VM this runs on.')
  define('integer', 'startup_timeout', 'With --strategy=multi_worker: seconds to wait for '
         'every worker of TF_CONFIG to answer before giving up (exit 69), naming the missing '
         'ones; 0: no limit. Long enough for cloud workers that start minutes apart (new GPU '
         'nodes, large images to pull); while waiting, a line every 30 s names who is missing.')
  define('integer', 'batch_size', 'Global batch size (all replicas).')
  define('float', 'learning_rate', 'Peak learning rate (for --base_batch_size if '
         '--lr_scaling is set).')
  define('integer', 'epochs', 'Epochs to train (ignored if --train_steps > 0).')
  define('integer', 'train_steps', 'Total train steps; 0: from --epochs.')
  define('integer', 'steps_per_loop', 'Train steps per host call (one tf.function call); '
         'progress is logged after each.')
  define('integer', 'seed', 'Seed for initial weights and data order.')
  define('string', 'input', f'Where training batches are made: {", ".join(INPUTS)}. host: '
         'tf.data on the host CPU; device: the training data is held in each accelerator\'s '
         'memory and batches are drawn there (same batches, no host work per step).')
  define('integer', 'device_data_max_mb', 'With --input=device: the most memory (MB) the '
         'training data may take on each device (all of it on one machine; a worker\'s shard '
         'on several); over it is an error.')
  define('bool', 'cache', 'Hold the raw (uint8) training examples in memory and shuffle by '
         'permutation; --nocache streams them through --shuffle_buffer, for data sets larger '
         'than memory.')
  define('integer', 'shuffle_buffer', 'With --nocache: examples in the shuffle buffer per '
         'input pipeline.')
  define('integer', 'input_threads', 'Private tf.data thread pool of this size for the input '
         'pipeline; 0: TensorFlow\'s shared pool.')
  define('string', 'mixed_precision', f'Keras mixed-precision policy: '
         f'{", ".join(MIXED_PRECISION)} (auto: bfloat16 on TPUs, GPUs of compute capability '
         '8.0+ and CPUs with AMX or AVX512-BF16; float16 on 7.x; float32 elsewhere).')
  define('bool', 'jit_compile', 'Compile the forward/backward pass with XLA.')
  define('string', 'augment', f'Training augmentation: {", ".join(AUGMENTATIONS)} (random '
         'horizontal flips, and shifts of up to 4 pixels; no flips for data sets where a mirror '
         'image changes the class, like digits).')
  define('string', 'lr_schedule', f'Learning rate schedule: {", ".join(LR_SCHEDULES)} '
         '(cosine decays --learning_rate to 0 over the run, after --warmup_steps; wsd holds it '
         'after the warm-up, then decays it linearly to 0 over the last --decay_fraction).')
  define('float', 'decay_fraction', 'With --lr_schedule=wsd: the share of the run\'s steps '
         'over which the rate falls linearly to 0 at the end (0: 0.3).')
  define('integer', 'warmup_steps', 'Linear warm-up from 0 to --learning_rate (cosine or wsd).')
  define('float', 'warmup_epochs', 'The warm-up in epochs instead of steps (cosine or wsd): '
         'the same share of the run at any batch size.')
  define('bool', 'whiten_init', 'A new run\'s first convolution starts as a whitening '
         'filter bank of 3x3 patches of the training images (each principal component as w '
         'and -w, scaled to unit variance), as the CIFAR-10 speed runs start; the model is '
         'unchanged.')
  define('bool', 'whiten_init_all', 'With --whiten_init, the later layers start from the '
         'data too: the second convolution and the hidden dense layer as whitening filter '
         'banks of their inputs, the output layer as the least-squares readout of the '
         'classes from the hidden features.')
  define('float', 'warmup_fraction', 'The warm-up as a share of the run\'s steps (cosine '
         'or wsd), e.g. 0.1.')
  define('bool', 'target_schedule', 'With --target_accuracy: the run\'s length follows from '
         '--batch_size and the target by the rule of trainer/jobs/target.py (steps measured '
         'for 65% and 70% on CIFAR-10 with configs/time_to_target.cfg), so that the decay '
         'ends where the target is reached; --epochs and --train_steps are ignored.')
  define('string', 'optimizer', f'Keras optimizer: {", ".join(OPTIMIZERS)} (adam: the '
         'tutorial\'s).')
  define('float', 'weight_decay', 'Decoupled weight decay (not for adam; biases excluded); '
         'default: the Keras optimizer\'s own (adamw, muon: 0.004; lamb, lion, sgd: none).')
  define('float', 'momentum', 'Momentum of sgd (default 0.9) or muon (default Keras\').')
  define('bool', 'nesterov', 'Nesterov momentum for sgd.')
  define('bool', 'muon_conv', 'muon: orthogonalise the conv kernels\' updates too, each '
         '[kh, kw, in, out] kernel as a [kh*kw*in, out] matrix; --nomuon_conv: Keras\' Muon '
         'as it is (the hidden dense layer only, AdamW for the convolutions), the recipe of '
         'the presets before.')
  define('float', 'muon_adam_lr_ratio', 'muon: the rate of its AdamW branch (biases and the '
         'output layer) as a fraction of --learning_rate; default Keras\' 1.')
  define('string', 'lr_scaling', f'{", ".join(LR_SCALINGS)}: scale --learning_rate from '
         '--base_batch_size to the global --batch_size, linearly or by the square root '
         '(sqrt_capped: by the square root below the base, the base\'s rate above it).')
  define('string', 'momentum_scaling', f'{", ".join(MOMENTUM_SCALINGS)}: sgd, muon: above '
         '--base_batch_size, 1 - --momentum grows in proportion to the global batch (0.95 at '
         'the base is 0.9 at twice the base); at or below the base it stays as given.')
  define('integer', 'base_batch_size', 'The global batch that --learning_rate and --momentum '
         'are meant for (with --lr_scaling, --momentum_scaling).')
  define('float', 'ema_decay', 'Keep an exponential moving average of the weights with this '
         'decay (e.g. 0.99); evaluation, best/ and the export use it. 0: off.')
  define('bool', 'eval_flip', 'Evaluate (and serve from the export) the mean logits of each '
         'image and its mirror image.')
  define('float', 'label_smoothing', 'Label smoothing of the training loss (0: none).')
  define('integer', 'checkpoint_every_steps', 'Save a checkpoint every N steps (and at every '
         'epoch end); 0: epoch ends only.')
  define('integer', 'eval_every_steps', 'Evaluate every N steps (and at every epoch end); '
         '0: epoch ends only.')
  define('float', 'target_accuracy', 'Stop at the first evaluation whose accuracy is at or '
         'above this (e.g. 0.65), then save, export and report as at the end; results.json '
         'records the step, examples and seconds it took. 0: train the whole schedule.')
  define('integer', 'eval_every_examples', 'Evaluate every N training examples (rounded up '
         'to whole steps), the same cadence at any batch size, and not at epoch ends; '
         '0: --eval_every_steps decides.')
  define('integer', 'keep_checkpoints', 'Keep the newest N checkpoints.')
  define('bool', 'deterministic', 'TF op determinism: a resumed run ends with exactly the '
         'weights of an uninterrupted one (CPU; see README).')
  define('string', 'export_dir', 'Where the final SavedModel goes; default $AIP_MODEL_DIR, '
         'else <model_dir>/export.')
  define('string', 'tensorboard_dir', 'Where TensorBoard summaries go (train/, eval/); '
         'default $AIP_TENSORBOARD_LOG_DIR, else --model_dir.')
  define('string', 'checkpoint_dir', 'Where checkpoints go; default $AIP_CHECKPOINT_DIR, '
         'else --model_dir.')
  define('string', 'profile_steps', 'START,END: trace training steps START to END (1-based) '
         'with the TensorFlow profiler, for TensorBoard\'s Profile tab; empty: no trace.')
  define('string', 'image_size', 'With --dataset=image_folder: HEIGHT,WIDTH the images are '
         'resized to; default: the size of the first training image.')
  define('bool', 'skip_bad_images', 'With --dataset=image_folder: leave damaged images out '
         '(a warning each, and a count) instead of stopping with an error.')
  # Serving exports.
  define('bool', 'export_litert', 'Also write model.tflite (LiteRT) into the export folder: '
         'uint8 images in, probabilities out, like the SavedModel\'s default signature.')
  define('string', 'litert_quantize', f'With --export_litert: {", ".join(LITERT_QUANTIZATIONS)}'
         '. int8: also model_int8.tflite, full-integer quantized (int8 weights and '
         'activations, uint8 input), calibrated on a few hundred training images.')
  define('integer', 'export_max_pixels', 'The export\'s serving_bytes signature (and '
         'trainer.predict) refuses image files whose header declares more pixels (width x '
         'height), before decoding them.')

  # Hyperparameter tuning on Vertex AI (trainer/report/hypertune.py).
  define('string', 'tune_metric', f'What a tuning trial reports after each evaluation: '
         f'{", ".join(TUNE_METRICS)} (the tuning job\'s metric id).')
  define('bool', 'tune_report', 'Report --tune_metric after each evaluation in the '
         'cloudml-hypertune format ($CLOUD_ML_HP_METRIC_FILE, default '
         '/tmp/hypertune/output.metrics); default: only in a tuning trial '
         '($CLOUD_ML_TRIAL_ID or TF_CONFIG\'s trial set).')
  # Fine-tuning (trainer/jobs/init_from.py, trainer/model/freezing.py).
  define('string', 'init_from', 'Start a new run from the weights of another run: its run '
         'folder (the newest checkpoint in checkpoints/, the averaged weights if it used '
         '--ema_decay) or a SavedModel export folder. Fresh optimizer, step 0; a new output '
         'layer when the number of classes differs. Ignored when --model_dir has checkpoints '
         '(that run resumes).')
  define('string', 'freeze', f'Layers kept at the weights the run starts from (--init_from '
         f'or --whiten_init): {", ".join(FREEZES)} (first_conv: the first conv layer; conv: '
         'both conv layers; all_but_head: all but the output layer).')
  define('float', 'freeze_epochs', 'How long --freeze lasts, in epochs (e.g. 2); then every '
         'layer trains. 0: the whole run.')
  define('integer', 'freeze_min_batch', '--freeze only at a global --batch_size of at least '
         'this; below it every layer trains (0: at any batch).')

  # How the run reports, not what it does: no Config field, not in config.json.
  flags.DEFINE_enum('log_format', 'text', logs.FORMATS, 'text: "HH:MM:SS  message" lines for '
                    'people; json: one Cloud Logging structured entry per line (the cloud '
                    'launchers set it); absl: absl\'s prefixed lines (also what -v 1 gives '
                    'when this flag is not set).', flag_values=flag_values)


def log_format(values: flags.FlagValues = flags.FLAGS) -> str:
  """--log_format, except that `-v 1` alone asks for absl's format, for those who grep it."""
  if not values['log_format'].present and values['verbosity'].value > 0:
    return 'absl'
  return values['log_format'].value


def config_from_flags(values: flags.FlagValues = flags.FLAGS) -> Config:
  """The validated Config for the parsed flags (raises UserError on bad values)."""
  fields = {name: values[name].value for name in Config.__dataclass_fields__}
  return Config(**fields).validate()


def config_from_command_line(argv, values: flags.FlagValues = flags.FLAGS) -> Config:
  """config_from_flags for an entry point's main(argv): whatever absl left besides the
  program name is a mistyped flag, refused with UserError."""
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])} '
                    '(flags are --name=value or --name value)')
  return config_from_flags(values)


# Hyperparameter tuning on Vertex AI passes each trial's values as `--name value`. absl
# takes the next argument as the value of any flag but a boolean one, so `--cache false`
# would leave `false` behind as an argument: those two are joined. And it passes a discrete
# parameter's values as floats ("128.0", kuds/mesozoic-labs#127), which an integer flag
# refuses: a whole number written so is passed as the integer it is.
_BOOLEAN_WORDS = ('true', 'false', 't', 'f', '1', '0')  # What absl's boolean parser takes.
_WHOLE_FLOAT = re.compile(r'[+-]?[0-9]+\.0*$')


def tuning_arguments(argv, values: flags.FlagValues = flags.FLAGS) -> list:
  """argv as absl takes it: `--bool_flag WORD` as `--bool_flag=WORD`, and `N.0` given to
  an integer flag as `N`."""
  out, i = [], 0
  while i < len(argv):
    arg = argv[i]
    name, has_value, value = arg[2:].partition('=') if arg.startswith('--') else ('', '', '')
    flag = values[name] if name in values else None
    if flag is not None and flag.boolean and not has_value and i + 1 < len(argv) \
        and argv[i + 1].lower() in _BOOLEAN_WORDS:
      out.append(f'{arg}={argv[i + 1]}')
      i += 2
      continue
    if flag is not None and isinstance(flag.parser, flags.IntegerParser) \
        and (has_value or i + 1 < len(argv)):
      if not has_value:
        value, i = argv[i + 1], i + 1
      arg = f'--{name}={value.split(".")[0] if _WHOLE_FLOAT.match(value) else value}'
    out.append(arg)
    i += 1
  return out


def parse_flags(argv):
  """absl's flags_parser for the entry points that take the training flags.

  absl's own parser reports a bad flag value in two lines and exits with 1; ours is the
  one `error: ...` line (JSON under --log_format=json) and exit 2 of every bad input."""
  try:
    return flags.FLAGS(argv[:1] + tuning_arguments(argv[1:]))
  except flags.Error as e:
    logs.plain_line(f'error: {e}', 'ERROR', logs.requested_format(argv[1:]))
    sys.exit(EXIT_USER_ERROR)
