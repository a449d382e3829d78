"""What a run tells people: on the console, in Cloud Logging and in TensorBoard.

Modules:
  logs.py       --log_format: text, Cloud Logging JSON or absl; C++ lines rewritten alike
  progress.py   progress lines with a steady-rate ETA, evaluations, the end-of-run summary
  summaries.py  TensorBoard event files: scalars, pictures, the HParams entry
  pictures.py   the sample-image grid and the confusion matrix, drawn with Pillow
  profiling.py  the --profile_steps window of the TensorFlow profiler
  hypertune.py  a tuning trial's metric after each evaluation, for Vertex AI (cloudml-hypertune)

May import: trainer.core, trainer.model.
"""
