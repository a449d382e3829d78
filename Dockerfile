# The trainer as a container: `docker run IMAGE [trainer flags]` is `python -m trainer.main`.
#   GPU (default): docker build -t cifar10-trainer .
#   CPU only:      docker build --build-arg TF_IMAGE_TAG=2.21.0 -t cifar10-trainer:cpu .
# The tag must start with the tensorflow pin of requirements.txt (tests/test_dockerfile.py
# checks it): the base image's TensorFlow then already satisfies the pin, and pip installs
# only the other packages (the GPU image brings CUDA itself: no requirements-gpu.txt here).
ARG TF_IMAGE_TAG=2.21.0-gpu
FROM tensorflow/tensorflow:${TF_IMAGE_TAG}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Dependencies before the code: editing the code does not redo this layer. The base
# image's TensorFlow is held as a constraint, so pip keeps it (the GPU image's
# build with its CUDA) and fails the build if the pin disagrees instead of installing a
# second TensorFlow over it.
COPY requirements.txt .
RUN python3 -m pip list --format=freeze | grep -i '^tensorflow==' > /tmp/base-tensorflow.txt \
    && python3 -m pip install --no-cache-dir -c /tmp/base-tensorflow.txt -r requirements.txt \
    && rm /tmp/base-tensorflow.txt

COPY trainer/ trainer/
COPY configs/ configs/
COPY launch/ launch/

# The code stays root's (read-only to the run); the default run folder runs/<timestamp>
# and TFDS's ~/tensorflow_datasets are the user's.
RUN useradd --create-home --shell /usr/sbin/nologin --uid 10001 trainer \
    && mkdir runs && chown trainer:trainer runs
USER 10001

# Exec form: the trainer is PID 1 and gets the SIGTERM of a preemption directly.
ENTRYPOINT ["python3", "-m", "trainer.main"]
