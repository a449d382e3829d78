"""The size an image file declares, read from its header before anything is decoded.

TensorFlow's decoders allocate whatever size a file declares: a 389 KB PNG that declares
20,000 x 20,000 pixels costs gigabytes and seconds to decode. Pillow guards against this
with `MAX_IMAGE_PIXELS`; these functions do the same for PNG, JPEG, GIF and BMP, in
TensorFlow ops, so that a SavedModel's own graph (TF Serving, Vertex AI) applies the limit:

  PNG   the IHDR chunk, which must come first: big-endian width and height at bytes 16, 20
  GIF   the logical screen: little-endian 16-bit width and height at bytes 6, 8 (TensorFlow's
        decoder allocates frames of this size)
  BMP   the info header: little-endian 32-bit width and height at bytes 18, 22 (a negative
        height is a top-down bitmap)
  WebP  the first chunk: VP8 (lossy) 14-bit sizes at bytes 26, 28; VP8L (lossless) 14-bit
        sizes less one, packed at byte 21; VP8X (extended) 24-bit canvas sizes less one at
        bytes 24, 27, and its animation flag (animations are refused: TensorFlow 2.21's
        decoder crashes the process on them)
  JPEG  the frame header (a SOFn marker segment): a scan over the marker segments before it,
        skipping stray bytes as libjpeg does, for at most MAX_JPEG_STEPS steps

The formats are told apart by the magic bytes TensorFlow's decode_image looks at. JPEG XL,
which decode_image also reads, declares its size in a bit-packed header, and is refused.
"""

import tensorflow as tf

from trainer.core import config

# read()'s status: what the header says about the file.
OK, EMPTY, NOT_AN_IMAGE, TRUNCATED, DAMAGED, ANIMATED_WEBP, JPEG_XL = range(7)
OVER_LIMIT = 7  # What check() adds: the declared size is over the limit.
REASONS = (
    'fine',
    'an empty file',
    'not an image file (PNG, JPEG, GIF, BMP or WebP)',
    'a truncated image: the file ends inside its header',
    'a damaged image: its header declares no valid size',
    # TensorFlow 2.21's decode_image ends the process ("double free or corruption") on one.
    'an animated WebP, which TensorFlow\'s decoder cannot take',
    'a JPEG XL file, whose size is not checked before decoding; send PNG, JPEG, GIF, BMP or WebP',
    'over the pixel limit',
)
DEFAULT_MAX_PIXELS = config.DEFAULT_MAX_PIXELS  # --export_max_pixels
# Steps of the JPEG scan: a step passes one marker segment or up to _WINDOW stray bytes.
# Real files have a dozen or two segments before the frame header (EXIF, ICC, tables).
MAX_JPEG_STEPS = 1024
_WINDOW = 64
_SOF_MARKERS = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
# Markers without a length: TEM, RSTn, and another SOI.
_STANDALONE = (0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8)
_EOI, _SOS = 0xD9, 0xDA


def _bytes_at(data, length, pos, count: int):
  """(int64 [count] of the bytes at `pos`, zero past the end; how many are real)."""
  pos = tf.minimum(pos, length)
  piece = tf.strings.substr(data, tf.cast(pos, tf.int32), count)
  raw = tf.cast(tf.io.decode_raw(piece, tf.uint8), tf.int64)
  real = tf.shape(raw, out_type=tf.int64)[0]
  return tf.pad(raw, [[0, count - real]]), real


def _unsigned(b, start: int, size: int, big_endian: bool):
  order = range(size) if big_endian else reversed(range(size))
  value = tf.constant(0, tf.int64)
  for i in order:
    value = value * 256 + b[start + i]
  return value


def _i64(value):
  return tf.constant(value, tf.int64)


def _result(status, height=0, width=0):
  return tf.stack([tf.cast(status, tf.int64), tf.cast(height, tf.int64),
                   tf.cast(width, tf.int64)])


def _sized(status_if_short, have, need, height, width):
  """OK with the size if `need` header bytes are there and the size is positive."""
  status = tf.where(have < need, _i64(status_if_short),
                    tf.where((height > 0) & (width > 0), _i64(OK), _i64(DAMAGED)))
  return _result(status, height, width)


def _png(head, have):
  width, height = _unsigned(head, 16, 4, True), _unsigned(head, 20, 4, True)
  is_ihdr = tf.reduce_all(tf.equal(head[12:16], [73, 72, 68, 82]))
  result = _sized(TRUNCATED, have, 24, height, width)
  return tf.where((have >= 16) & ~is_ihdr, _result(DAMAGED), result)


def _gif(head, have):
  return _sized(TRUNCATED, have, 10, _unsigned(head, 8, 2, False), _unsigned(head, 6, 2, False))


def _bmp(head, have):
  width = _unsigned(head, 18, 4, False)
  height = _unsigned(head, 22, 4, False)
  height = tf.where(height >= 2**31, 2**32 - height, height)  # Top-down: negative.
  width = tf.where(width >= 2**31, _i64(0), width)
  return _sized(TRUNCATED, have, 26, height, width)


def _webp(head, have):
  chunk = head[12:16]
  is_chunk = lambda name: tf.reduce_all(tf.equal(chunk, list(name)))
  lossy_width = _unsigned(head, 26, 2, False) % 16384
  lossy_height = _unsigned(head, 28, 2, False) % 16384
  lossy_ok = tf.reduce_all(tf.equal(head[23:26], [0x9D, 0x01, 0x2A]))
  bits = _unsigned(head, 21, 4, False)
  lossless_ok = tf.equal(head[20], 0x2F)
  animated = tf.not_equal(tf.bitwise.bitwise_and(head[20], 2), 0)
  return tf.case([
      (have < 16, lambda: _result(TRUNCATED)),
      (is_chunk(b'VP8 '), lambda: tf.where(
          (have >= 30) & ~lossy_ok, _result(DAMAGED),
          _sized(TRUNCATED, have, 30, lossy_height, lossy_width))),
      (is_chunk(b'VP8L'), lambda: tf.where(
          (have >= 21) & ~lossless_ok, _result(DAMAGED),
          _sized(TRUNCATED, have, 25, bits // 16384 % 16384 + 1, bits % 16384 + 1))),
      (is_chunk(b'VP8X'), lambda: tf.where(
          (have >= 21) & animated, _result(ANIMATED_WEBP),
          _sized(TRUNCATED, have, 30, _unsigned(head, 27, 3, False) + 1,
                 _unsigned(head, 24, 3, False) + 1))),
  ], default=lambda: _result(DAMAGED), exclusive=False)


def _jpeg(data, length):
  """Walks the marker segments from byte 2 to the first frame header."""
  searching = _i64(-1)
  is_sof = lambda m: tf.reduce_any(tf.equal(m, _SOF_MARKERS))
  is_standalone = lambda m: tf.reduce_any(tf.equal(m, _STANDALONE))
  index = tf.range(_WINDOW, dtype=tf.int64)

  def step(steps, pos, result):
    w, real = _bytes_at(data, length, pos, _WINDOW)
    marker = w[1]
    at_marker = (real >= 2) & tf.equal(w[0], 0xFF) & tf.not_equal(marker, 0xFF)
    segment_length = w[2] * 256 + w[3]
    # At a marker: what it says.
    status = tf.where(is_sof(marker), _i64(OK),
             tf.where(is_standalone(marker), searching,
             tf.where(tf.equal(marker, _EOI) | tf.equal(marker, _SOS), _i64(DAMAGED),
             tf.where(real < 4, _i64(TRUNCATED),
             tf.where(segment_length < 2, _i64(DAMAGED), searching)))))
    after = pos + tf.where(is_standalone(marker), _i64(2), 2 + segment_length)
    found = _result(status, _unsigned(w, 5, 2, True), _unsigned(w, 7, 2, True))
    # Elsewhere: on to the next 0xFF that a marker byte follows (libjpeg skips such bytes).
    ff = tf.equal(w, 0xFF) & (index < real)
    pair = ff[:-1] & ~ff[1:] & (index[1:] < real)
    skip = tf.where(tf.reduce_any(pair), tf.argmax(tf.cast(pair, tf.int32), output_type=tf.int64),
                    tf.maximum(real - 1, 1))
    elsewhere = _result(tf.where(real < 2, _i64(TRUNCATED), searching))
    result = tf.where(at_marker, tf.where(tf.equal(status, OK), _sized(TRUNCATED, real, 9,
                                                                       found[1], found[2]),
                                          found), elsewhere)
    return steps + 1, tf.where(at_marker, after, pos + skip), result

  _, _, result = tf.while_loop(
      lambda steps, pos, result: (result[0] == searching) & (steps < MAX_JPEG_STEPS),
      step, (tf.constant(0), _i64(2), _result(searching)))
  return tf.where(result[0] == searching, _result(DAMAGED), result)


def read(data):
  """int64 [status, height, width] of one encoded file (a scalar string tensor)."""
  data = tf.convert_to_tensor(data, tf.string)
  length = tf.cast(tf.strings.length(data), tf.int64)
  head, have = _bytes_at(data, length, _i64(0), 30)

  def starts(magic: bytes):
    return (have >= len(magic)) & tf.reduce_all(tf.equal(head[:len(magic)], list(magic)))

  return tf.case([
      (tf.equal(length, 0), lambda: _result(EMPTY)),
      (starts(b'\x89PNG\r\n\x1a\n'), lambda: _png(head, have)),
      (starts(b'\xff\xd8\xff'), lambda: _jpeg(data, length)),
      (starts(b'GIF8'), lambda: _gif(head, have)),
      (starts(b'BM'), lambda: _bmp(head, have)),
      (starts(b'RIFF') & tf.reduce_all(tf.equal(head[8:12], list(b'WEBP'))),
       lambda: _webp(head, have)),
      (starts(b'\xff\x0a') | starts(b'\0\0\0\x0cJXL '), lambda: _result(JPEG_XL)),
  ], default=lambda: _result(NOT_AN_IMAGE), exclusive=False)


def check(headers, max_pixels):
  """read()'s [..., 3] [status, height, width] with OVER_LIMIT for a size over `max_pixels`."""
  status, height, width = tf.unstack(headers, axis=-1)
  over = tf.equal(status, OK) & (height * width > tf.cast(max_pixels, tf.int64))
  return tf.stack([tf.where(over, _i64(OVER_LIMIT), status), height, width], axis=-1)


def message(header, max_pixels: int) -> str:
  """check()'s verdict as words (a Python string), for a file that fails it."""
  status, height, width = (int(v) for v in header)
  if status == OVER_LIMIT:
    return (f'declares {width} x {height} pixels, over the limit of {max_pixels:,} pixels '
            '(width x height); not decoded')
  return REASONS[status]


def message_op(index, header, max_pixels: int):
  """message() as a string tensor, for an error raised inside the SavedModel's graph."""
  status, height, width = tf.unstack(header)
  over = tf.strings.join(['declares ', tf.strings.as_string(width), ' x ',
                          tf.strings.as_string(height), f' pixels, over the limit of '
                          f'{max_pixels:,} pixels (width x height); not decoded'])
  reason = tf.where(tf.equal(status, OVER_LIMIT), over, tf.gather(REASONS, status))
  return tf.strings.join(['image ', tf.strings.as_string(index), ': ', reason])
