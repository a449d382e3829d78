"""The run configuration: one immutable object that the library functions take.

Flags (trainer/flags.py) and presets (configs/*.cfg) are only ways to build it; tests build
it directly.
"""

import dataclasses
from typing import Optional, Tuple

from trainer.core.errors import UserError

STRATEGIES = ('default', 'one_device', 'mirrored', 'multi_worker', 'tpu')
# auto: what the hardware computes fastest (trainer/core/precision.py).
MIXED_PRECISION = ('none', 'mixed_float16', 'mixed_bfloat16', 'auto')
LR_SCHEDULES = ('constant', 'cosine', 'wsd')
AUGMENTATIONS = ('none', 'flip', 'flip_shift')
INPUTS = ('host', 'device')
OPTIMIZERS = ('adam', 'adamw', 'lamb', 'lion', 'sgd', 'muon')
# sqrt_capped: the square root up to --base_batch_size, the base's rate above it.
LR_SCALINGS = ('none', 'linear', 'sqrt', 'sqrt_capped')
MOMENTUM_SCALINGS = ('none', 'linear')
# The optimizers that take --momentum, with their default (sgd: ours; muon: Keras').
MOMENTUM_DEFAULTS = {'sgd': 0.9, 'muon': 0.95}
LITERT_QUANTIZATIONS = ('none', 'int8')  # Serving exports: --litert_quantize.
# --export_max_pixels: Pillow's MAX_IMAGE_PIXELS is 89,478,485 (a warning; twice that an
# error). 50 megapixels takes the photos of all but the largest camera sensors; decoding and
# resizing one costs the serving_bytes signature about a gigabyte (docs/serving.md).
DEFAULT_MAX_PIXELS = 50_000_000
# Fine-tuning (trainer/jobs/init_from.py, trainer/model/freezing.py): the layers --freeze holds.
FREEZES = ('none', 'first_conv', 'conv', 'all_but_head')
# --startup_timeout: cloud workers can start many minutes apart (a cluster autoscaler adding
# GPU nodes, a multi-GB image pulled on each), yet a worker that never comes (a wrong address)
# should not hold the others for the hour TensorFlow's own wait lasts.
DEFAULT_STARTUP_TIMEOUT = 1800
_CHOICES = {'strategy': STRATEGIES, 'augment': AUGMENTATIONS, 'lr_schedule': LR_SCHEDULES,
            'mixed_precision': MIXED_PRECISION, 'optimizer': OPTIMIZERS,
            'lr_scaling': LR_SCALINGS, 'momentum_scaling': MOMENTUM_SCALINGS, 'input': INPUTS,
            'litert_quantize': LITERT_QUANTIZATIONS, 'freeze': FREEZES}
# Hyperparameter tuning on Vertex AI: what a trial reports (trainer/report/hypertune.py).
TUNE_METRICS = ('eval_accuracy', 'eval_loss')
_CHOICES['tune_metric'] = TUNE_METRICS


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs. Defaults reproduce the TensorFlow CIFAR-10 CNN tutorial."""
  dataset: str = 'cifar10'
  data_dir: Optional[str] = None
  train_split: str = 'train'
  eval_split: str = 'test'
  model_dir: Optional[str] = None

  strategy: str = 'default'
  num_cpu_devices: int = 0
  tpu: str = ''
  # multi_worker: seconds to wait for every worker to answer (trainer/core/startup.py); 0: no limit.
  startup_timeout: int = DEFAULT_STARTUP_TIMEOUT

  batch_size: int = 64  # Global batch, across all replicas.
  learning_rate: float = 1e-3
  epochs: int = 5
  train_steps: int = 0  # 0: derived from epochs.
  steps_per_loop: int = 100
  seed: int = 42
  shuffle_buffer: int = 50_000  # Only with cache=False: the order then streams through it.
  cache: bool = True  # Hold the raw uint8 training examples in memory (needed by input=device).
  # Where training batches are made: 'host' (tf.data) or 'device' (trainer/data/device_input.py).
  input: str = 'host'
  # input=device: the most the training data may take on each device. Room for CIFAR-10
  # (147 MB), and a quarter of the smallest accelerator in reach (a TPU v2 core: 8 GiB).
  device_data_max_mb: int = 2048
  input_threads: int = 0  # A private tf.data thread pool of this size; 0: the shared one.
  mixed_precision: str = 'none'
  jit_compile: bool = False

  # Beyond the tutorial (configs/fast.cfg): same model, better training recipe.
  augment: str = 'none'  # 'flip': random horizontal flips; 'flip_shift': and 4-pixel shifts.
  lr_schedule: str = 'constant'
  warmup_steps: int = 0
  label_smoothing: float = 0.0
  warmup_epochs: float = 0.0  # Warm-up in epochs: the same share of the run at any batch.
  warmup_fraction: float = 0.0  # Warm-up as a share of the run's steps.
  decay_fraction: float = 0.0  # wsd: the share of the run the final decay takes; 0: 0.3.
  whiten_init: bool = False  # The first conv starts as a whitening filter bank (model/whitening.py).
  whiten_init_all: bool = False  # With whiten_init: every later layer starts from the data too.

  # Large batches (trainer/model/optimizers.py): the optimizer, and the rate scaled to the batch.
  optimizer: str = 'adam'
  weight_decay: Optional[float] = None  # None: the Keras optimizer's own default.
  momentum: Optional[float] = None  # sgd and muon; None: 0.9 for sgd, Keras' for muon.
  nesterov: bool = True  # sgd
  momentum_scaling: str = 'none'  # linear: 1 - momentum grows with the batch above the base.
  muon_conv: bool = True  # muon: conv kernels take the Muon step too (model/muon.py).
  muon_adam_lr_ratio: Optional[float] = None  # muon: its AdamW branch's rate / the rate; Keras' 1.
  lr_scaling: str = 'none'  # --learning_rate is for --base_batch_size; scaled to batch_size.
  base_batch_size: int = 64
  ema_decay: float = 0.0  # > 0: evaluate, keep best and export an average of the weights.
  eval_flip: bool = False  # Evaluate (and serve) the mean logits of each image and its mirror.

  checkpoint_every_steps: int = 500  # Also at every epoch end; 0: epoch ends only.
  eval_every_steps: int = 0  # Also at every epoch end; 0: epoch ends only.
  # Time to a result (trainer/jobs/target.py): stop at the first evaluation at or above
  # this eval accuracy (0: off); evaluations every N examples at any batch, not at epoch ends.
  target_accuracy: float = 0.0
  eval_every_examples: int = 0
  # The run's length from --batch_size and --target_accuracy (jobs/target.py, schedule_steps):
  # a schedule whose decay ends where the target is reached.
  target_schedule: bool = False
  keep_checkpoints: int = 3
  deterministic: bool = False
  export_dir: Optional[str] = None  # Default: $AIP_MODEL_DIR, else <model_dir>/export.

  # Default: $AIP_TENSORBOARD_LOG_DIR / $AIP_CHECKPOINT_DIR, else model_dir (trainer/run_folder/run_dirs.py).
  tensorboard_dir: Optional[str] = None
  checkpoint_dir: Optional[str] = None
  profile_steps: str = ''  # 'START,END': trace training steps START..END (1-based).

  # --dataset=image_folder (trainer/data/image_folder.py).
  image_size: str = ''  # 'H,W'; empty: the size of the first training image.
  skip_bad_images: bool = False  # Leave damaged images out (with a warning) instead of failing.

  # Hyperparameter tuning on Vertex AI (trainer/report/hypertune.py): the metric a trial
  # reports after each evaluation, and whether it reports (None: in a tuning trial only).
  tune_metric: str = 'eval_accuracy'
  tune_report: Optional[bool] = None
  # Serving exports (trainer/model/export.py, trainer/model/litert.py).
  export_litert: bool = False  # Also write <export>/model.tflite.
  litert_quantize: str = 'none'  # 'int8': model_int8.tflite too, calibrated on training images.
  # Files declaring more pixels are refused by serving_bytes and trainer.predict, undecoded.
  export_max_pixels: int = DEFAULT_MAX_PIXELS
  # Fine-tuning (trainer/jobs/init_from.py, trainer/model/freezing.py).
  init_from: str = ''  # A run folder or an export whose weights a new run starts from.
  freeze: str = 'none'  # Layers kept at their starting weights (model/freezing.py).
  freeze_epochs: float = 0.0  # How long --freeze lasts; 0: the whole run.
  freeze_min_batch: int = 0  # --freeze only from this global batch up; 0: at any batch.

  def validate(self) -> 'Config':
    """Raises UserError for values no run could use; returns self for chaining."""
    for name, choices in _CHOICES.items():
      if getattr(self, name) not in choices:
        raise UserError(f'unknown --{name}={getattr(self, name)!r}; choose one of: '
                        f'{", ".join(choices)}')
    if not 0.0 <= self.label_smoothing < 1.0:
      raise UserError(f'--label_smoothing must be in [0, 1), got {self.label_smoothing}')
    warmups = ('warmup_steps', 'warmup_epochs', 'warmup_fraction')
    for name in warmups:
      if getattr(self, name) and self.lr_schedule == 'constant':
        raise UserError(f'--{name} only applies to --lr_schedule=cosine or wsd')
    if sum(bool(getattr(self, name)) for name in warmups) > 1:
      raise UserError('give one of --warmup_steps, --warmup_epochs, --warmup_fraction')
    if not 0.0 <= self.warmup_fraction < 1.0:
      raise UserError(f'--warmup_fraction is a share of the run in [0, 1), got '
                      f'{self.warmup_fraction}')
    if self.decay_fraction and self.lr_schedule != 'wsd':
      raise UserError('--decay_fraction only applies to --lr_schedule=wsd')
    if not 0.0 <= self.decay_fraction <= 1.0:
      raise UserError(f'--decay_fraction is a share of the run in (0, 1], got '
                      f'{self.decay_fraction}')
    if self.target_schedule and not self.target_accuracy:
      raise UserError('--target_schedule sizes the run for --target_accuracy: give it too')
    self._validate_optimizer()
    self._validate_init()
    for name in ('batch_size', 'base_batch_size', 'steps_per_loop', 'shuffle_buffer',
                 'keep_checkpoints', 'device_data_max_mb', 'export_max_pixels'):
      if getattr(self, name) <= 0:
        raise UserError(f'--{name} must be positive, got {getattr(self, name)}')
    if self.learning_rate <= 0:
      raise UserError(f'--learning_rate must be positive, got {self.learning_rate}')
    for name in ('epochs', 'train_steps', 'num_cpu_devices', 'checkpoint_every_steps',
                 'eval_every_steps', 'warmup_steps', 'warmup_epochs', 'input_threads',
                 'startup_timeout'):
      if getattr(self, name) < 0:
        raise UserError(f'--{name} must not be negative, got {getattr(self, name)}')
    if self.epochs == 0 and self.train_steps == 0:
      raise UserError('nothing to train: set --epochs or --train_steps to a positive number')
    if self.num_cpu_devices and self.strategy != 'mirrored':
      raise UserError('--num_cpu_devices only applies to --strategy=mirrored')
    if self.tpu and self.strategy != 'tpu':
      raise UserError('--tpu only applies to --strategy=tpu')
    if not self.dataset:
      raise UserError('--dataset must not be empty')
    if self.input == 'device' and not self.cache:
      raise UserError('--input=device holds the training data in device memory; it cannot '
                      'stream it (--nocache): use --input=host with --nocache')
    if self.deterministic and self.jit_compile:
      # With op determinism on, TensorFlow's XLA bridge refuses MaxPoolGrad ("GPU MaxPool
      # gradient ops do not yet have a deterministic XLA implementation", XLA's
      # SelectAndScatter; tensorflow/tensorflow#69417), on a CPU as well: measured with
      # TensorFlow 2.21, despite the message. The CNN's max-pooling needs it.
      raise UserError('--deterministic cannot go with --jit_compile: XLA has no '
                      'deterministic max-pool gradient (SelectAndScatter); drop --jit_compile '
                      'for a reproducible run, or --deterministic for XLA')
    parse_profile_steps(self.profile_steps)
    if not 0.0 <= self.target_accuracy < 1.0:
      raise UserError(f'--target_accuracy is an eval accuracy in (0, 1) (0: off), e.g. 0.65; '
                      f'got {self.target_accuracy}')
    if self.eval_every_examples < 0:
      raise UserError(f'--eval_every_examples must not be negative, got '
                      f'{self.eval_every_examples}')
    if self.eval_every_examples and self.eval_every_steps:
      raise UserError('give --eval_every_examples or --eval_every_steps, not both')
    # Serving exports.
    if self.litert_quantize != 'none' and not self.export_litert:
      raise UserError(f'--litert_quantize={self.litert_quantize} applies to the LiteRT file: '
                      'add --export_litert')
    self._validate_fine_tuning()
    return self

  def _validate_fine_tuning(self):
    if self.freeze_epochs < 0:
      raise UserError(f'--freeze_epochs must not be negative, got {self.freeze_epochs}')
    for name in ('freeze_epochs', 'freeze_min_batch'):
      if getattr(self, name) and self.freeze == 'none':
        raise UserError(f'--{name} only applies with --freeze')
    if self.freeze_min_batch < 0:
      raise UserError(f'--freeze_min_batch must not be negative, got {self.freeze_min_batch}')
    if self.freeze != 'none' and not (self.init_from or self.whiten_init):
      # Frozen layers keep their starting weights: without either, random ones.
      raise UserError(f'--freeze={self.freeze} holds layers at the weights the run starts '
                      'from: give --init_from=RUN_FOLDER or EXPORT, or --whiten_init (or drop '
                      '--freeze)')

  def _validate_init(self):
    if self.whiten_init_all and not self.whiten_init:
      raise UserError('--whiten_init_all extends --whiten_init to the later layers; '
                      'give both')

  def _validate_optimizer(self):
    if self.weight_decay is not None:
      if self.optimizer == 'adam':
        raise UserError('--weight_decay does not apply to --optimizer=adam; '
                        'use --optimizer=adamw (Adam with decoupled weight decay)')
      if self.weight_decay < 0:
        raise UserError(f'--weight_decay must not be negative, got {self.weight_decay}')
    if self.momentum_scaling != 'none' and self.optimizer not in MOMENTUM_DEFAULTS:
      raise UserError('--momentum_scaling only applies to --optimizer=sgd or muon')
    if self.momentum is not None:
      if self.optimizer not in MOMENTUM_DEFAULTS:
        raise UserError('--momentum only applies to --optimizer=sgd or muon')
      if not 0.0 <= self.momentum < 1.0:
        raise UserError(f'--momentum must be in [0, 1), got {self.momentum}')
    if not self.muon_conv and self.optimizer != 'muon':
      raise UserError('--nomuon_conv only applies to --optimizer=muon')
    if self.muon_adam_lr_ratio is not None:
      if self.optimizer != 'muon':
        raise UserError('--muon_adam_lr_ratio only applies to --optimizer=muon')
      if self.muon_adam_lr_ratio <= 0:
        raise UserError(f'--muon_adam_lr_ratio must be positive, got {self.muon_adam_lr_ratio}')
    if not 0.0 <= self.ema_decay < 1.0:
      raise UserError(f'--ema_decay must be in [0, 1) (0: no averaging), got {self.ema_decay}')

  @property
  def scaled_learning_rate(self) -> float:
    """The peak rate for the global batch: --learning_rate is the rate at
    --base_batch_size, scaled linearly or by the square root (--lr_scaling)."""
    ratio = self.batch_size / self.base_batch_size
    factor = {'none': 1.0, 'linear': ratio, 'sqrt': ratio ** 0.5,
              'sqrt_capped': min(ratio, 1.0) ** 0.5}[self.lr_scaling]
    return self.learning_rate * factor

  @property
  def scaled_momentum(self) -> Optional[float]:
    """The momentum of sgd or muon for the global batch (None for the others). With
    --momentum_scaling=linear, 1 - momentum grows linearly with the batch above
    --base_batch_size: fewer, larger steps average their gradients over fewer steps."""
    if self.optimizer not in MOMENTUM_DEFAULTS:
      return None
    base = MOMENTUM_DEFAULTS[self.optimizer] if self.momentum is None else self.momentum
    if self.momentum_scaling == 'none':
      return base
    ratio = max(self.batch_size / self.base_batch_size, 1.0)
    return max(1.0 - (1.0 - base) * ratio, 0.0)

  @property
  def wsd_decay_fraction(self) -> float:
    # Hägele et al. 2024 found a decay over the last fifth or so of the run as good as cosine;
    # 0.2 to 0.5 gave the same here (benchmarks/time_to_target.md).
    return self.decay_fraction or 0.3

  def warmup_steps_for(self, steps_per_epoch: int, total_steps: int = 0) -> int:
    if self.warmup_fraction:
      return max(1, round(self.warmup_fraction * total_steps))
    if self.warmup_epochs:
      return max(1, round(self.warmup_epochs * steps_per_epoch))
    return self.warmup_steps

  @property
  def profile_window(self) -> Optional[Tuple[int, int]]:
    return parse_profile_steps(self.profile_steps)

  def replace(self, **changes) -> 'Config':
    return dataclasses.replace(self, **changes)


def parse_profile_steps(text: str) -> Optional[Tuple[int, int]]:
  """(first, last) training step to profile from 'START,END'; None for ''."""
  if not text:
    return None
  parts = text.split(',')
  try:
    first, last = (int(part) for part in parts)
  except ValueError:
    first = last = 0
  if not 1 <= first <= last:
    raise UserError(f'--profile_steps must be START,END with 1 <= START <= END (the first and '
                    f'last training step to trace), got {text!r}')
  return first, last
