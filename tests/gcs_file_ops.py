"""Child of tests/test_gcs_stand_in.py: tf.io.gfile's operations on the gs:// folder argv[1],
through TensorFlow's own GCS client; prints what it saw as one JSON line."""

import json
import sys

import tensorflow as tf


def main(folder):
  gfile = tf.io.gfile
  seen = {}
  with gfile.GFile(f'{folder}/a/one.txt', 'w') as f:
    f.write('one')
  with gfile.GFile(f'{folder}/a/big.bin', 'wb') as f:  # Over one upload chunk or read block.
    f.write(bytes(range(256)) * 40_000)
  gfile.makedirs(f'{folder}/b/c')
  seen['exists'] = [gfile.exists(f'{folder}/a/one.txt'), gfile.exists(f'{folder}/a/none')]
  seen['isdir'] = [gfile.isdir(f'{folder}/a'), gfile.isdir(f'{folder}/b/c'),
                   gfile.isdir(f'{folder}/a/one.txt')]
  seen['listdir'] = sorted(gfile.listdir(folder))
  seen['read'] = gfile.GFile(f'{folder}/a/one.txt').read()
  with gfile.GFile(f'{folder}/a/big.bin', 'rb') as f:
    f.seek(1_000_000)
    seen['seek_read'] = list(f.read(4))
  seen['size'] = gfile.stat(f'{folder}/a/big.bin').length
  gfile.rename(f'{folder}/a/one.txt', f'{folder}/a/two.txt')
  seen['glob'] = sorted(gfile.glob(f'{folder}/a/*.txt'))
  try:
    gfile.rename(f'{folder}/a/big.bin', f'{folder}/a/two.txt', overwrite=False)
  except tf.errors.AlreadyExistsError:
    seen['rename_refused'] = True
  seen['walk'] = sorted((top, sorted(dirs), sorted(files)) for top, dirs, files in
                        gfile.walk(folder))
  gfile.rmtree(f'{folder}/b')
  seen['after_rmtree'] = sorted(gfile.listdir(folder))
  print(json.dumps(seen))


if __name__ == '__main__':
  main(sys.argv[1])
