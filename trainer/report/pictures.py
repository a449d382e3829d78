"""Pictures for TensorBoard's Images tab, drawn with Pillow into arrays (no display needed)."""

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)


def load_font(size: int):
  # Pillow ships a scalable font when built with FreeType (its wheels are); a bare build
  # falls back to a small bitmap font, which is still legible.
  try:
    return ImageFont.load_default(size=size)
  except (TypeError, ValueError, OSError):
    return ImageFont.load_default()


def _to_rgb(image: np.ndarray) -> Image.Image:
  # Clipped, with NaN as black: a picture of broken data beats no picture.
  image = np.clip(np.nan_to_num(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  return Image.fromarray(image).convert('RGB')


def fit_text(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
  """`text`, shortened with an ellipsis until it fits in `width` pixels."""
  if draw.textlength(text, font=font) <= width:
    return text
  while text and draw.textlength(text + '…', font=font) > width:
    text = text[:-1]
  return text + '…'


def image_grid(images: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
               columns: int = 5, cell: int = 96) -> np.ndarray:
  """Images in a grid, each with its class name below: the tutorial's `show()` as an array.

  `images` are uint8 [N, H, W, C] (C = 1 or 3); returns uint8 [height, width, 3].
  Small images are enlarged to `cell` pixels with nearest-neighbour sampling, so that a
  32x32 picture stays crisp instead of blurring.
  """
  count = len(images)
  rows = -(-count // columns)
  label_height = max(12, cell // 6)
  font = load_font(label_height - 2)
  pad = 4
  canvas = Image.new('RGB', (columns * (cell + pad) + pad,
                             rows * (cell + label_height + pad) + pad), _BACKGROUND)
  draw = ImageDraw.Draw(canvas)
  for i, (image, label) in enumerate(zip(images, labels)):
    row, column = divmod(i, columns)
    x = pad + column * (cell + pad)
    y = pad + row * (cell + label_height + pad)
    canvas.paste(_to_rgb(image).resize((cell, cell), Image.NEAREST), (x, y))
    name = fit_text(str(class_names[int(label)]), draw, font, cell)
    draw.text((x + cell / 2, y + cell + 1), name, fill=_INK, font=font, anchor='mt')
  return np.asarray(canvas)


def _heat(fraction: float):
  """White (0) to dark blue (1), the usual look of a confusion matrix."""
  low, high = np.array(_BACKGROUND, float), np.array((8, 48, 107), float)
  return tuple(int(c) for c in low + (high - low) * fraction)


def confusion_matrix_image(matrix: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
  """A confusion matrix drawn as a labelled heat map; uint8 [height, width, 3].

  Rows are true classes, columns predicted ones. Each cell is shaded by the fraction of
  its row (so rare and common classes read alike) and shows the count when it fits.
  """
  matrix = np.asarray(matrix, dtype=np.float64)
  classes = len(class_names)
  cell = int(np.clip(800 // max(classes, 1), 6, 48))
  show_text = cell >= 24
  font = load_font(max(10, min(14, cell // 3)))
  probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  label_width = int(max(probe.textlength(str(n), font=font) for n in class_names)) + 8 \
      if show_text else 0
  title_height = 22
  left = label_width + 20
  top = title_height + label_width + 4
  size = classes * cell
  canvas = Image.new('RGB', (left + size + 8, top + size + 8), _BACKGROUND)
  draw = ImageDraw.Draw(canvas)
  draw.text((left, 4), 'rows: true class, columns: predicted class', fill=_INK, font=font)
  row_totals = matrix.sum(axis=1, keepdims=True)
  fractions = np.divide(matrix, row_totals, out=np.zeros_like(matrix), where=row_totals > 0)
  for true in range(classes):
    for predicted in range(classes):
      x, y = left + predicted * cell, top + true * cell
      shade = fractions[true, predicted]
      draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=_heat(shade))
      if show_text:
        text_color = _BACKGROUND if shade > 0.5 else _INK
        draw.text((x + cell / 2, y + cell / 2), f'{int(round(matrix[true, predicted]))}',
                  fill=text_color, font=font, anchor='mm')
  draw.rectangle((left - 1, top - 1, left + size, top + size), outline=_INK)
  if show_text:
    for index, name in enumerate(class_names):
      middle = index * cell + cell / 2
      draw.text((left - 6, top + middle), str(name), fill=_INK, font=font, anchor='rm')
      # Column names run upwards, one per narrow column, as in a plotted matrix.
      width = int(probe.textlength(str(name), font=font)) + 2
      label = Image.new('RGB', (width, cell), _BACKGROUND)
      ImageDraw.Draw(label).text((0, cell / 2), str(name), fill=_INK, font=font, anchor='lm')
      rotated = label.rotate(90, expand=True)
      canvas.paste(rotated, (int(left + index * cell), top - 4 - rotated.height))
  return np.asarray(canvas)
