import keras
import numpy as np

from trainer.model import cnn


def test_tutorial_architecture_and_parameter_count():
  model = cnn.create_model((32, 32, 3), 10)
  kinds = [type(layer).__name__ for layer in model.layers]
  assert kinds == ['Conv2D', 'MaxPooling2D', 'Conv2D', 'MaxPooling2D', 'Flatten', 'Dense',
                   'Dense']
  conv1, _, conv2, _, _, hidden, logits = model.layers
  assert (conv1.filters, conv1.kernel_size, conv1.padding) == (32, (3, 3), 'valid')
  assert (conv2.filters, conv2.kernel_size) == (32, (3, 3))
  assert conv1.activation.__name__ == conv2.activation.__name__ == 'relu'
  assert (hidden.units, hidden.activation.__name__) == (64, 'relu')
  assert (logits.units, logits.activation.__name__) == (10, 'linear')
  assert model.count_params() == 84_586


def test_input_shape_and_classes_follow_the_dataset():
  model = cnn.create_model((28, 28, 1), 47)
  assert model.output_shape == (None, 47)
  assert model(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 47)


def test_logits_stay_float32_under_mixed_precision():
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy('mixed_float16')
  try:
    model = cnn.create_model((32, 32, 3), 10)
  finally:
    keras.mixed_precision.set_global_policy(previous)
  assert model.layers[0].compute_dtype == 'float16'
  assert model(np.zeros((1, 32, 32, 3), np.float32)).dtype == 'float32'
