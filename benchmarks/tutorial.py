"""The TensorFlow CIFAR-10 CNN tutorial's own code, which the benchmarks measure us against.

Kept as the tutorial writes it: NumPy arrays divided by 255.0 (float64 copies of every
image), a Sequential model, compile() and fit().
"""

import keras


def load_arrays(data_dir, smoke=False):
  """CIFAR-10 as NumPy arrays (the tutorial calls keras.datasets.cifar10.load_data(); the
  same images come from TFDS here, so that a prepared offline copy works)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  train_split, test_split = ('train[:2048]', 'test[:512]') if smoke else ('train', 'test')
  train = tfds.load('cifar10', split=train_split, data_dir=data_dir, batch_size=-1)
  test = tfds.load('cifar10', split=test_split, data_dir=data_dir, batch_size=-1)
  (train_images, train_labels), (test_images, test_labels) = (
      (tfds.as_numpy(train['image']), tfds.as_numpy(train['label'])),
      (tfds.as_numpy(test['image']), tfds.as_numpy(test['label'])))
  # Normalize pixel values to be between 0 and 1 -- as the tutorial does.
  train_images, test_images = train_images / 255.0, test_images / 255.0
  return train_images, train_labels, test_images, test_labels


def compiled_model():
  model = keras.models.Sequential()
  model.add(keras.layers.Conv2D(32, (3, 3), activation='relu', input_shape=(32, 32, 3)))
  model.add(keras.layers.MaxPooling2D((2, 2)))
  model.add(keras.layers.Conv2D(32, (3, 3), activation='relu'))
  model.add(keras.layers.MaxPooling2D((2, 2)))
  model.add(keras.layers.Flatten())
  model.add(keras.layers.Dense(64, activation='relu'))
  model.add(keras.layers.Dense(10))
  model.compile(optimizer='adam',
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  return model
