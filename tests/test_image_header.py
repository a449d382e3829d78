"""The size an image file declares, read from its header in TensorFlow ops (the pixel limit
of serving_bytes and trainer.predict), against what TensorFlow's decoder makes of it."""

import struct

import numpy as np
import pytest
import tensorflow as tf

from tests import image_files
from trainer.data import image_header

_read = tf.function(image_header.read)


def _header(data: bytes):
  return tuple(int(v) for v in _read(tf.constant(data)).numpy())


def _decoded_size(data: bytes):
  shape = tf.io.decode_image(data, expand_animations=False).shape
  return shape[0], shape[1]


@pytest.mark.parametrize('fmt,mode,options', [
    ('PNG', 'RGB', {}), ('PNG', 'L', {}), ('PNG', 'RGBA', {}), ('PNG', 'LA', {}),
    ('PNG', 'P', {}), ('JPEG', 'RGB', {}), ('JPEG', 'L', {}),
    ('JPEG', 'RGB', {'progressive': True}), ('JPEG', 'CMYK', {}),
    ('JPEG', 'RGB', {'exif': b'Exif\0\0' + bytes(60000)}),
    ('GIF', 'RGB', {}), ('GIF', 'L', {}), ('BMP', 'RGB', {}), ('BMP', 'L', {}),
    ('BMP', 'RGBA', {}), ('WEBP', 'RGB', {}), ('WEBP', 'RGB', {'lossless': True}),
    ('WEBP', 'RGBA', {}), ('WEBP', 'RGBA', {'lossless': True}),
])
@pytest.mark.parametrize('size', [(20, 30), (1, 1), (257, 3), (3, 700), (16383, 2)])
def test_the_declared_size_is_the_decoded_size(fmt, mode, options, size):
  data = image_files.encode(fmt, size, mode, **options)
  assert _header(data) == (image_header.OK,) + _decoded_size(data) == (image_header.OK,) + size


def test_jpeg_segments_before_the_frame_header_are_walked():
  base = image_files.encode('JPEG', (40, 50))
  many = [image_files.app_segment(0xE1 + i % 14, bytes(65000)) for i in range(6)]
  comments = [image_files.app_segment(0xFE, b'comment %d' % i) for i in range(300)]
  for data in (image_files.jpeg_with_segments(base, many),
               image_files.jpeg_with_segments(base, comments),
               # Stray bytes and fill bytes between segments, which libjpeg skips.
               image_files.jpeg_with_segments(base, [image_files.app_segment(0xFE, b'x'), b'\x00' * 500,
                                                      b'\xff\xff\xff'])):
    assert _decoded_size(data) == (40, 50)
    assert _header(data) == (image_header.OK, 40, 50)


def test_a_jpeg_without_a_frame_header_within_the_bound_is_damaged():
  base = image_files.encode('JPEG', (4, 4))
  data = image_files.jpeg_with_segments(
      base, [image_files.app_segment(0xFE, b'') for _ in range(image_header.MAX_JPEG_STEPS)])
  assert _header(data)[0] == image_header.DAMAGED
  start_of_scan = base[:2] + b'\xff\xda' + base[2:]
  assert _header(start_of_scan)[0] == image_header.DAMAGED


def test_a_top_down_bitmap_has_its_height():
  data = bytearray(image_files.encode('BMP', (5, 7)))
  data[22:26] = struct.pack('<i', -5)
  assert _decoded_size(bytes(data)) == (5, 7)
  assert _header(bytes(data)) == (image_header.OK, 5, 7)


@pytest.mark.parametrize('fmt', ['PNG', 'JPEG', 'GIF', 'BMP', 'WEBP'])
def test_every_cut_either_says_truncated_or_the_true_size(fmt):
  data = image_files.encode(fmt, (9, 11))
  statuses = set()
  for end in range(1, min(len(data), 700)):
    status, height, width = _header(data[:end])
    statuses.add(status)
    assert status in (image_header.OK, image_header.TRUNCATED, image_header.NOT_AN_IMAGE)
    if status == image_header.OK:
      assert (height, width) == (9, 11)
  assert image_header.TRUNCATED in statuses


@pytest.mark.parametrize('data,status', [
    (b'', image_header.EMPTY), (b'hello, world', image_header.NOT_AN_IMAGE),
    (b'GIF89a\0\0\0\0', image_header.DAMAGED),  # Zero by zero.
    (b'\x89PNG\r\n\x1a\n\0\0\0\rXXXX' + bytes(12), image_header.DAMAGED),  # No IHDR first.
])
def test_files_that_declare_no_size(data, status):
  assert _header(data)[0] == status


def test_an_animated_webp_is_refused_before_tensorflow_decodes_it():
  # TensorFlow 2.21's decode_image ends the process on this file: it must not reach it.
  data = image_files.animated_webp()
  assert _header(data)[0] == image_header.ANIMATED_WEBP


def test_jpeg_xl_is_refused():
  assert _header(b'\xff\x0a' + bytes(20))[0] == image_header.JPEG_XL
  assert _header(b'\0\0\0\x0cJXL \r\n\x87\n' + bytes(20))[0] == image_header.JPEG_XL


def test_the_limit_refuses_what_is_over_it_and_says_so():
  bomb = image_files.png_bomb(20000)
  assert len(bomb) < 500_000
  header = _read(tf.constant(bomb))
  assert tuple(header.numpy()) == (image_header.OK, 20000, 20000)
  verdict = image_header.check(header, image_header.DEFAULT_MAX_PIXELS).numpy()
  assert verdict[0] == image_header.OVER_LIMIT
  assert image_header.message(verdict, image_header.DEFAULT_MAX_PIXELS) == (
      'declares 20000 x 20000 pixels, over the limit of 50,000,000 pixels (width x height); '
      'not decoded')
  assert image_header.check(header, 400_000_000).numpy()[0] == image_header.OK
  # Batched, as the export checks a request.
  both = tf.stack([header, _read(tf.constant(image_files.encode('PNG')))])
  np.testing.assert_array_equal(image_header.check(both, 1000).numpy()[:, 0],
                                [image_header.OVER_LIMIT, image_header.OK])
  text = image_header.message_op(tf.constant(0, tf.int64), verdict, 50_000_000).numpy()
  assert text.decode() == 'image 0: ' + image_header.message(verdict, 50_000_000)
