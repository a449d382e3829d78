"""The training batches each input gives, as NumPy, for tests that compare inputs."""

import tensorflow as tf

from trainer.data import pipeline


def _local(strategy, images, labels):
  return [(i.numpy(), l.numpy()) for i, l in zip(strategy.experimental_local_results(images),
                                                 strategy.experimental_local_results(labels))]


def host_batches(strategy, source, steps, **kwargs):
  """`steps` lists of this worker's per-replica (images, labels), from --input=host."""
  iterator = pipeline.distributed_train_iterator(strategy, source, **kwargs)
  return [_local(strategy, *next(iterator)) for _ in range(steps)]


def device_batches(strategy, source, steps, **kwargs):
  """The same from --input=device, drawn the way the training step draws them."""
  iterator = pipeline.distributed_train_iterator(strategy, source, input_mode='device',
                                                 **kwargs)

  @tf.function
  def draw():
    return strategy.run(iterator.replica_batch, args=(next(iterator),))

  return [_local(strategy, *draw()) for _ in range(steps)]
