"""The CNN of TensorFlow's CIFAR-10 tutorial, layer for layer."""

import keras

OUTPUT_LAYER = 'logits'


def create_model(image_shape, num_classes: int) -> keras.Model:
  """Conv(32)-pool-Conv(32)-pool-Dense(64)-Dense(classes); 84,586 parameters on CIFAR-10.

  The last layer stays float32 under a mixed-precision policy so that logits, softmax
  and the loss keep full precision.
  """
  return keras.Sequential([
      keras.Input(shape=tuple(image_shape)),
      keras.layers.Conv2D(32, (3, 3), padding='valid', activation='relu'),
      keras.layers.MaxPooling2D((2, 2)),
      keras.layers.Conv2D(32, (3, 3), padding='valid', activation='relu'),
      keras.layers.MaxPooling2D((2, 2)),
      keras.layers.Flatten(),
      keras.layers.Dense(64, activation='relu'),
      keras.layers.Dense(num_classes, dtype='float32', name=OUTPUT_LAYER),
  ], name='tutorial_cnn')
