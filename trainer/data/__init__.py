"""The data path: where examples come from and how each training step's batch is made.

Modules:
  sources.py       what a source is; in-memory and synthetic sources
  tfds_source.py   a TensorFlow Datasets data set (--dataset=NAME)
  image_folder.py  a folder of image files, a subfolder per class (--dataset=image_folder)
  image_header.py  the size an image file declares, read before decoding: the pixel limit
  shards.py        each worker's shard of the training split, held in memory
  order.py         which examples each step sees, and their augmentation and scaling
  host_input.py    --input=host: tf.data batches from the shard
  device_input.py  --input=device: the shard on each device, batches drawn in the step
  pipeline.py      the source a Config names; the distributed train and eval inputs

May import: trainer.core.
"""
