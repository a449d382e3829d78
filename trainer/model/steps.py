"""The compiled computation: model, optimizer, loss and metrics under one strategy.

`Trainer` owns the tf.functions that run many train steps, or an evaluation pass, per host
call; train.py decides when to call them and what to do with the results.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from trainer.core.config import Config
from trainer.core import precision
from trainer.model import cnn
from trainer.model import input_wait
from trainer.model import metrics
from trainer.model import optimizers


def cross_entropy(labels, logits, label_smoothing=0.0):
  if not label_smoothing:
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
  classes = logits.shape[-1]
  targets = tf.one_hot(labels, classes) * (1.0 - label_smoothing) + label_smoothing / classes
  return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def eval_logits(model, images, flip: bool):
  """float32 logits; with `flip`, the mean over each image and its mirror image."""
  logits = tf.cast(model(images, training=False), tf.float32)
  if not flip:
    return logits
  mirrored = tf.cast(model(tf.reverse(images, axis=[2]), training=False), tf.float32)
  return (logits + mirrored) / 2.0


class Trainer:
  """The model, its optimizer and the compiled train/eval loops, all under one strategy."""

  def __init__(self, config: Config, strategy: tf.distribute.Strategy, info,
               total_steps: int = 0, steps_per_epoch: int = 0):
    self.config = config
    self.strategy = strategy
    self.global_batch = config.batch_size
    with strategy.scope():
      self.model = cnn.create_model(info.image_shape, info.num_classes)
      optimizer = optimizers.create(config, optimizers.learning_rate_schedule(
          config, total_steps, steps_per_epoch))
      if keras.mixed_precision.global_policy().name == 'mixed_float16':
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
      # Keras 3 creates optimizer slots lazily, which fails inside a replica context:
      # build them now, on the model's variables, inside the scope.
      optimizer.build(self.model.trainable_variables)
      self.optimizer = optimizer
      # Where the raw weights wait while the averaged ones are evaluated or saved.
      self._raw_weights = [
          tf.Variable(tf.zeros_like(v.value), trainable=False, name='raw_weights')
          for v in self.model.trainable_variables] if config.ema_decay else []
      # Batches consumed, which positions the data stream on resume. Not the optimizer's
      # step count: a float16 step with overflowing gradients is skipped, not applied.
      self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step',
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.train_sums = metrics.Sums('train')
      self.eval_sums = metrics.Sums('eval')
      self.eval_confusion = metrics.ConfusionMatrix(info.num_classes)
    self.eval_loop = tf.function(self._eval_loop)
    self.freeze([])

  def freeze(self, variables):
    """From the next train loop on, `variables` keep their values: the optimizer is handed
    the others only (so no update, weight decay included, touches them). Retraces."""
    frozen = {v.path for v in variables}
    self.updated_variables = [v for v in self.model.trainable_variables
                              if v.path not in frozen]
    self._gradients = tf.function(self._compute_gradients, jit_compile=True) \
        if self.config.jit_compile else self._compute_gradients
    self.train_loop = tf.function(self._train_loop)

  def _compute_gradients(self, images, labels):
    variables = self.updated_variables
    with tf.GradientTape() as tape:
      logits = self.model(images, training=True)
      per_example_loss = cross_entropy(labels, logits, self.config.label_smoothing)
      # Averaged over the *global* batch: the optimizer sums gradients across replicas.
      loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=self.global_batch)
      if self.loss_scaled:
        loss = self.optimizer.scale_loss(loss)
    return tape.gradient(loss, variables), logits, per_example_loss

  @property
  def loss_scaled(self) -> bool:
    return isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

  def _train_step(self, inputs):
    images, labels = inputs
    grads, logits, per_example_loss = self._gradients(images, labels)
    replicas = self.strategy.num_replicas_in_sync
    if self.loss_scaled and replicas > 1:
      # Keras' LossScaleOptimizer tests each replica's *local* gradients for overflow, so
      # replicas could disagree on skipping a step and then deadlock in the all-reduce.
      # Reducing first gives every replica the same verdict; dividing by the replica count
      # undoes the sum the optimizer applies again.
      context = tf.distribute.get_replica_context()
      grads = [g / replicas for g in context.all_reduce(tf.distribute.ReduceOp.SUM, grads)]
    self.optimizer.apply_gradients(zip(grads, self.updated_variables))
    self.train_sums.add(labels, logits, per_example_loss, tf.ones_like(per_example_loss))

  def _train_loop(self, iterator, steps):
    # Several steps per host call: the Python overhead is paid once per loop, not per step.
    # Returns (seconds waiting for input, seconds in the loop) for TensorBoard; clocks are
    # an error under op determinism.
    # A DeviceInput hands out its data, and its replica_batch draws each replica's batch
    # inside the step, on the device.
    draw = getattr(iterator, 'replica_batch', None)
    if draw is None:
      run = lambda inputs: self.strategy.run(self._train_step, args=(inputs,))
    else:
      run = lambda data: self.strategy.run(
          lambda replica_data: self._train_step(draw(replica_data)), args=(data,))
    timings = input_wait.timed_loop(iterator, steps, run, clocked=not self.config.deterministic,
                                    produced_per_step=not getattr(iterator, 'device_resident',
                                                                  False))
    self.global_step.assign_add(tf.cast(steps, tf.int64))
    return timings

  def _eval_step(self, inputs):
    images, labels, weights = inputs
    logits = eval_logits(self.model, images, self.config.eval_flip)
    self.eval_sums.add(labels, logits, cross_entropy(labels, logits), weights)
    self.eval_confusion.add(labels, logits, weights)

  def _eval_loop(self, iterator, steps):
    for _ in tf.range(steps):
      self.strategy.run(self._eval_step, args=(next(iterator),))

  def evaluate(self, eval_dataset, eval_steps: int):
    """(loss, accuracy, examples) of the weights that are reported: the averaged ones under
    --ema_decay, with --eval_flip's mirror views if set."""
    self.eval_sums.reset()
    self.eval_confusion.reset()
    with self.averaged_weights():
      self.eval_loop(iter(eval_dataset), tf.constant(eval_steps))
    return self.eval_sums.result()

  @contextlib.contextmanager
  def averaged_weights(self):
    """Inside: the model holds the optimizer's moving averages of its weights (--ema_decay);
    after: the raw weights again, bit for bit. Without averaging, the model as it is."""
    if not self.config.ema_decay:
      yield
      return
    self._swap_in_averages()
    try:
      yield
    finally:
      self._restore_raw_weights()

  def _model_and_average_variables(self):
    # A LossScaleOptimizer (float16) keeps the averages in the optimizer it wraps.
    keeper = getattr(self.optimizer, 'inner_optimizer', self.optimizer)
    averages = keeper._model_variables_moving_average  # pylint: disable=protected-access
    return [(v.value, a.value, raw) for v, a, raw in
            zip(self.model.trainable_variables, averages, self._raw_weights)]

  @tf.function
  def _swap_in_averages(self):
    update = self.strategy.extended.update
    for variable, average, raw in self._model_and_average_variables():
      update(raw, lambda r, v: r.assign(v), args=(variable,))
      update(variable, lambda v, a: v.assign(a), args=(average,))

  @tf.function
  def _restore_raw_weights(self):
    for variable, _, raw in self._model_and_average_variables():
      self.strategy.extended.update(variable, lambda v, r: v.assign(r), args=(raw,))

  @tf.function
  def weights_finite(self):
    # The loss alone can hide NaN weights: ReLU on this CPU turns NaN activations into 0.
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                          for v in self.model.trainable_variables])

  @property
  def step(self) -> int:
    return int(self.global_step.numpy())

  @property
  def learning_rate(self) -> float:
    return float(np.asarray(self.optimizer.learning_rate))

  @property
  def skipped_steps(self) -> int:
    """Steps whose float16 gradients overflowed, so the loss scale dropped instead."""
    return self.step - int(self.optimizer.iterations.numpy())


def build_trainer(config: Config, strategy: tf.distribute.Strategy, info, total_steps: int = 0,
                  steps_per_epoch: int = 0) -> Trainer:
  """A Trainer whose model computes in --mixed_precision's policy (auto: the one
  trainer/core/precision.py picks for the strategy's devices)."""
  previous_policy = keras.mixed_precision.global_policy()
  policy, _ = precision.resolve(config.mixed_precision, strategy)
  keras.mixed_precision.set_global_policy('float32' if policy == 'none' else policy)
  try:
    return Trainer(config, strategy, info, total_steps, steps_per_epoch)
  finally:  # The policy is global state: leave it as it was for the caller.
    keras.mixed_precision.set_global_policy(previous_policy)
