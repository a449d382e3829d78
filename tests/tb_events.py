"""Reads TensorBoard event files back, the way TensorBoard itself loads them."""

import io

import numpy as np
from PIL import Image
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata


def load(run_dir) -> event_accumulator.EventAccumulator:
  """Every event of one run folder (its own event files, not its subfolders')."""
  accumulator = event_accumulator.EventAccumulator(
      str(run_dir), size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def _series(run_dir, plugin: str) -> dict:
  """{tag: [(step, value array), ...]} of the run's summaries for one TensorBoard plugin."""
  events = load(run_dir)
  return {tag: [(e.step, tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
          for tag in events.Tags()['tensors']
          if events.SummaryMetadata(tag).plugin_data.plugin_name == plugin}


def scalars(run_dir) -> dict:
  """{tag: [(step, value), ...]} of the run's scalar summaries."""
  return {tag: [(step, float(value)) for step, value in series]
          for tag, series in _series(run_dir, 'scalars').items()}


def _decode(encoded: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(encoded)).convert('RGB'))


def images(run_dir) -> dict:
  """{tag: [(step, uint8 array [h, w, 3]), ...]} of the run's image summaries."""
  # An image summary is [width, height, encoded image, ...] as strings.
  return {tag: [(step, _decode(value[2])) for step, value in series]
          for tag, series in _series(run_dir, 'images').items()}


def hparams(run_dir):
  """(session start info, experiment) protos of a run folder's HParams entry, or None."""
  events = load(run_dir)
  tags = events.Tags()['tensors']
  content = {tag: events.SummaryMetadata(tag).plugin_data.content for tag in tags
             if events.SummaryMetadata(tag).plugin_data.plugin_name == 'hparams'}
  session = content.get(hparams_metadata.SESSION_START_INFO_TAG)
  experiment = content.get(hparams_metadata.EXPERIMENT_TAG)
  return (session and hparams_metadata.parse_session_start_info_plugin_data(session),
          experiment and hparams_metadata.parse_experiment_plugin_data(experiment))
