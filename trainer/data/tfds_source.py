"""A TensorFlow Datasets image classification data set as a source (--dataset=NAME).

TFDS downloads and prepares the data set into --data_dir on first use; without a network
and without a prepared copy the run stops within seconds instead of retrying for minutes.
Workers shard by example range (tfds.even_splits): CIFAR-10 is one file per split.
"""

from typing import Optional

from absl import logging

from trainer.core.errors import UserError, first_line
from trainer.data.sources import AUTOTUNE, DatasetInfo

# Probed before a download: with no network TFDS retries for minutes before failing.
_NETWORK_PROBE_URLS = ('https://storage.googleapis.com',)
_NETWORK_PROBE_TIMEOUT_S = 5


def _network_reachable() -> bool:
  import requests  # pylint: disable=g-import-not-at-top  (TFDS's own HTTP client)
  for url in _NETWORK_PROBE_URLS:
    try:
      requests.head(url, timeout=_NETWORK_PROBE_TIMEOUT_S)
      return True
    except requests.RequestException:
      continue
  return False


class TfdsSource:
  """A TFDS image classification data set with `image` and `label` features."""

  def __init__(self, name: str, data_dir: Optional[str] = None,
               train_split: str = 'train', eval_split: str = 'test', download: bool = True):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
    self._tfds = tfds
    try:
      self._builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      raise UserError(f'unknown --dataset={name!r}: not a TFDS data set; see '
                      'https://www.tensorflow.org/datasets/catalog/overview or use '
                      '--dataset=synthetic') from None
    except Exception as e:  # A malformed data_dir or name surfaces as many error types.
      raise UserError(f'cannot open --dataset={name!r} in --data_dir={data_dir}: '
                      f'{first_line(e)}') from None
    if not self._builder.is_prepared():
      if not download:
        raise UserError(f'{name} is not prepared in {self._builder.data_dir}')
      self._download()
    self._splits = {'train': train_split, 'eval': eval_split}
    self.info = self._read_info(name)

  def _download(self):
    where = self._builder.data_dir
    if not _network_reachable():
      raise UserError(
          f'{self._builder.name} is not in --data_dir (looked in {where}) and there is no network '
          'to download it; point --data_dir at a folder holding a prepared copy, or run once '
          'where the network is reachable')
    logging.info('Downloading and preparing %s into %s (first use only)',
                 self._builder.name, where)
    try:
      self._builder.download_and_prepare()
    except Exception as e:  # Download and preparation raise many unrelated types.
      raise UserError(f'could not download/prepare {self._builder.name} into {where}: '
                      f'{first_line(e)}') from None

  def _read_info(self, name: str) -> DatasetInfo:
    info = self._builder.info
    shape, label = check_features(name, info.features)
    counts = {}
    for kind, split in self._splits.items():
      try:
        counts[kind] = info.splits[split].num_examples
      except (KeyError, ValueError):
        raise UserError(f'--dataset={name} has no split {split!r} for {kind}; it has: '
                        f'{", ".join(info.splits.keys()) or "none"}') from None
    return DatasetInfo(name=name, image_shape=shape, num_classes=label.num_classes,
                       class_names=tuple(label.names), num_train_examples=counts['train'],
                       num_eval_examples=counts['eval'])

  def read(self, split, shard_index, num_shards):
    name = self._splits[split]
    if num_shards > 1:
      # Sharding by example range, not by file: CIFAR-10 has a single file per split.
      name = self._tfds.even_splits(name, n=num_shards)[shard_index]
    ds = self._builder.as_dataset(
        split=name, shuffle_files=False,
        read_config=self._tfds.ReadConfig(try_autocache=False))
    return ds.map(lambda ex: (ex['image'], ex['label']), num_parallel_calls=AUTOTUNE)


def check_features(name: str, features):
  """Returns (image shape, label feature) of an image classification data set, or raises."""
  if 'image' not in features or 'label' not in features:
    raise UserError(f'--dataset={name} is not image classification: it needs "image" and '
                    f'"label" features, it has {", ".join(features.keys())}')
  shape = tuple(features['image'].shape)
  if len(shape) != 3 or None in shape:
    raise UserError(f'--dataset={name} has images of varying size {shape}; this trainer '
                    'needs a fixed image shape')
  label = features['label']
  if not hasattr(label, 'num_classes'):
    raise UserError(f'--dataset={name}: "label" is not a class label')
  return shape, label
