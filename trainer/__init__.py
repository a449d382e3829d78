"""A TensorFlow trainer for the CIFAR-10 tutorial CNN under any tf.distribute strategy."""
