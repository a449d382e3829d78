"""Command-line flags, and the Config they build. Presets in configs/ are flagfiles of these."""

from absl import flags

from trainer.config import Config, MIXED_PRECISION, STRATEGIES

_DEFAULTS = Config()


def define_flags() -> None:
  """Defines every trainer flag on absl's global FLAGS (once per process)."""
  d = _DEFAULTS
  flags.DEFINE_string('dataset', d.dataset, 'TFDS image classification data set (image/label '
                      'features), or "synthetic" for random device-resident data.')
  flags.DEFINE_string('data_dir', d.data_dir, 'TFDS data folder (local or any TF filesystem, '
                      'e.g. gs://); default: TFDS\'s own (~/tensorflow_datasets).')
  flags.DEFINE_string('train_split', d.train_split, 'TFDS split to train on.')
  flags.DEFINE_string('eval_split', d.eval_split, 'TFDS split to evaluate on after each epoch.')
  flags.DEFINE_string('model_dir', d.model_dir, 'Run folder for config, results (later: '
                      'checkpoints, summaries); default: runs/<timestamp>.')
  # Strings, not enums: Config.validate() gives the one-line error for a wrong choice.
  flags.DEFINE_string('strategy', d.strategy, f'tf.distribute strategy: {", ".join(STRATEGIES)}.')
  flags.DEFINE_integer('num_cpu_devices', d.num_cpu_devices, 'With --strategy=mirrored: split '
                       'the CPU into this many logical devices (replicas); 0 uses the GPUs.')
  flags.DEFINE_string('tpu', d.tpu, 'With --strategy=tpu: TPU name or grpc:// address; '
                      'empty for the TPU VM this runs on.')
  flags.DEFINE_integer('batch_size', d.batch_size, 'Global batch size (all replicas).')
  flags.DEFINE_float('learning_rate', d.learning_rate, 'Adam learning rate.')
  flags.DEFINE_integer('epochs', d.epochs, 'Epochs to train (ignored if --train_steps > 0).')
  flags.DEFINE_integer('train_steps', d.train_steps, 'Total train steps; 0: from --epochs.')
  flags.DEFINE_integer('steps_per_loop', d.steps_per_loop, 'Train steps per host call (one '
                       'tf.function call); progress is logged after each.')
  flags.DEFINE_integer('seed', d.seed, 'Seed for initial weights and data order.')
  flags.DEFINE_integer('shuffle_buffer', d.shuffle_buffer, 'Examples in the shuffle buffer '
                       'per input pipeline (>= split size: a full shuffle).')
  flags.DEFINE_string('mixed_precision', d.mixed_precision,
                      f'Keras mixed-precision policy: {", ".join(MIXED_PRECISION)}.')
  flags.DEFINE_bool('jit_compile', d.jit_compile, 'Compile the train step with XLA.')
  flags.DEFINE_integer('checkpoint_every_steps', d.checkpoint_every_steps, 'Save a checkpoint '
                       'every N steps (and at every epoch end); 0: epoch ends only.')
  flags.DEFINE_integer('keep_checkpoints', d.keep_checkpoints, 'Keep the newest N checkpoints.')
  flags.DEFINE_bool('deterministic', d.deterministic, 'TF op determinism: a resumed run ends '
                    'with exactly the weights of an uninterrupted one (CPU; see README).')
  flags.DEFINE_string('export_dir', d.export_dir, 'Where the final SavedModel goes; default '
                      '<model_dir>/export.')


def config_from_flags(values: flags.FlagValues = flags.FLAGS) -> Config:
  """The validated Config for the parsed flags (raises UserError on bad values)."""
  fields = {name: values[name].value for name in Config.__dataclass_fields__}
  return Config(**fields).validate()
