"""Encoded image files for header and prediction tests: every format, and broken ones."""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(fmt: str, size=(20, 30), mode='RGB', seed=0, **options) -> bytes:
  """A `fmt` (PNG, JPEG, GIF, BMP) file of `size` (height, width), noise in `mode`."""
  height, width = size
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels, 'RGB').convert(mode).save(out, fmt, **options)
  return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def png_bomb(side: int) -> bytes:
  """A valid grey PNG of side x side black pixels: a few hundred KB that declare side**2."""
  compressor = zlib.compressobj(9)
  row = b'\0' * (side + 1)  # Filter byte and the pixels.
  body = b''.join(compressor.compress(row) for _ in range(side)) + compressor.flush()
  return (b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 0, 0,
                                                               0, 0))
          + _chunk(b'IDAT', body) + _chunk(b'IEND', b''))


def jpeg_with_segments(data: bytes, segments) -> bytes:
  """`data` (a JPEG) with `segments` (bytes each, marker included) inserted after SOI."""
  return data[:2] + b''.join(segments) + data[2:]


def app_segment(marker: int, payload: bytes) -> bytes:
  return bytes([0xFF, marker]) + struct.pack('>H', len(payload) + 2) + payload


def animated_webp() -> bytes:
  frames = [Image.new('RGB', (30, 20), (40 * i, 0, 0)) for i in range(3)]
  out = io.BytesIO()
  frames[0].save(out, 'WEBP', save_all=True, append_images=frames[1:])
  return out.getvalue()
