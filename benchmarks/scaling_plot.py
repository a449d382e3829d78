"""The batch-scaling plot: median test accuracy (with its spread) against global batch size,
drawn with Pillow, so that the benchmark needs nothing beyond the trainer's packages."""

import math

from PIL import Image, ImageDraw

from trainer.report import pictures

_SIZE = (900, 560)
_MARGIN = dict(left=80, right=30, top=50, bottom=120)
_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
_GRID = (225, 225, 225)
_INK = (0, 0, 0)


def save(series, reference: float, path: str) -> None:
  """`series`: [(label, rows)], rows as benchmarks.batch_scaling.summarize returns them."""
  image = Image.new('RGB', _SIZE, (255, 255, 255))
  draw = ImageDraw.Draw(image)
  font, small = pictures.load_font(16), pictures.load_font(13)
  batches = sorted({row['batch_size'] for _, rows in series for row in rows})
  lows = [row['min_accuracy'] for _, rows in series for row in rows] + [reference]
  highs = [row['max_accuracy'] for _, rows in series for row in rows] + [reference]
  y_low = math.floor(min(lows) * 20) / 20  # Axis on 5% steps around the data.
  y_high = math.ceil(max(highs) * 20) / 20
  if y_high - y_low < 0.1:
    y_high = y_low + 0.1
  left, top = _MARGIN['left'], _MARGIN['top']
  right, bottom = _SIZE[0] - _MARGIN['right'], _SIZE[1] - _MARGIN['bottom']
  x_low, x_high = math.log2(batches[0]), math.log2(batches[-1])

  def x(batch):
    if x_high == x_low:
      return (left + right) / 2
    return left + (math.log2(batch) - x_low) / (x_high - x_low) * (right - left)

  def y(accuracy):
    return bottom - (accuracy - y_low) / (y_high - y_low) * (bottom - top)

  level = y_low
  while level <= y_high + 1e-9:
    draw.line([(left, y(level)), (right, y(level))], fill=_GRID)
    draw.text((left - 8, y(level)), f'{level:.0%}', fill=_INK, font=small, anchor='rm')
    level += 0.05
  for batch in batches:
    draw.line([(x(batch), top), (x(batch), bottom)], fill=_GRID)
    draw.text((x(batch), bottom + 8), str(batch), fill=_INK, font=small, anchor='mt')
  draw.rectangle([left, top, right, bottom], outline=_INK)
  draw.line([(left, y(reference)), (right, y(reference))], fill=(120, 120, 120), width=2)
  draw.text((right - 4, y(reference) - 4), f'tutorial, batch 64: {reference:.0%}',
            fill=(90, 90, 90), font=small, anchor='rb')
  for index, (label, rows) in enumerate(series):
    colour = _COLOURS[index % len(_COLOURS)]
    points = [(x(row['batch_size']), y(row['median_accuracy'])) for row in rows]
    if len(points) > 1:
      draw.line(points, fill=colour, width=3)
    for row, (px, py) in zip(rows, points):
      draw.line([(px, y(row['min_accuracy'])), (px, y(row['max_accuracy']))], fill=colour,
                width=2)
      draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=colour)
    legend_y = bottom + 58 + 18 * index
    draw.line([(left, legend_y), (left + 30, legend_y)], fill=colour, width=3)
    draw.text((left + 40, legend_y), pictures.fit_text(label, draw, small, right - left - 40),
              fill=_INK, font=small, anchor='lm')
  draw.text((_SIZE[0] / 2, 15), 'CIFAR-10 test accuracy after 5 epochs (median of seeds, '
            'bar: min-max) against global batch size', fill=_INK, font=font, anchor='mt')
  draw.text((_SIZE[0] / 2, bottom + 28), 'global batch size (log scale)', fill=_INK,
            font=small, anchor='mt')
  image.save(path)
