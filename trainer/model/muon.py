"""Muon for the conv kernels too: Keras' Muon, which orthogonalises 2-D kernels only.

keras.optimizers.Muon sends every variable that is not 2-D to its AdamW branch, so in this
CNN only the hidden dense layer would get Muon. Following the CIFAR-10 speed-run records
(Keller Jordan's Muon), a [kh, kw, in, out] conv kernel is taken as the [kh*kw*in, out]
matrix that maps an input patch to the output channels: its momentum is orthogonalised by
Keras' own Newton-Schulz iteration and scaled by Keras' own `lr_adjust` for that matrix.

Three of Muon's own hooks are overridden instead of copying its update step, so momentum,
Nesterov, weight decay, EMA and the AdamW branch stay Keras' code. The iteration runs in
the variable's dtype: float32 under the mixed-precision policies too, since Keras keeps the
variables, their gradients and the momentum in float32 there.
"""

import math
import re

import keras
from keras import ops

CONV_RANK = 4  # [kh, kw, in, out]


def as_matrix_shape(shape) -> tuple:
  """The 2-D shape Muon sees for a conv kernel of `shape`: (kh*kw*in, out)."""
  return (math.prod(shape[:-1]), shape[-1])


class ConvMuon(keras.optimizers.Muon):
  """keras.optimizers.Muon whose orthogonalised step also covers 4-D conv kernels."""

  def _should_use_adamw(self, variable):
    if len(variable.shape) != CONV_RANK:
      return super()._should_use_adamw(variable)
    return any(re.search(keyword, variable.path) for keyword in self.exclude_layers)

  def zeropower_via_newtonschulz5(self, x, steps: int):
    if len(x.shape) != CONV_RANK:
      return super().zeropower_via_newtonschulz5(x, steps)
    # Keras would read a 4-D tensor as a batch of kh x kw matrices of [in, out].
    matrix = ops.reshape(x, as_matrix_shape(x.shape))
    return ops.reshape(super().zeropower_via_newtonschulz5(matrix, steps), x.shape)

  def lr_adjust(self, x):
    if len(x.shape) != CONV_RANK or self.rms_rate is None:
      return super().lr_adjust(x)
    # Keras scales by the first two dimensions, which for a kernel are kh and kw.
    return x * (math.sqrt(max(as_matrix_shape(x.shape))) * self.rms_rate)
