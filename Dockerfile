# The trainer as a container: `docker run IMAGE [trainer flags]` is `python -m trainer.main`.
#   GPU (default): docker build -t cifar10-trainer .
#   CPU only:      docker build --build-arg TF_IMAGE_TAG=2.21.0 -t cifar10-trainer:cpu .
# The tag must start with the tensorflow pin of requirements.txt (tests/test_dockerfile.py
# checks it): the base image's TensorFlow then already satisfies the pin, and pip installs
# only the other packages instead of a second TensorFlow over it.
ARG TF_IMAGE_TAG=2.21.0-gpu
FROM tensorflow/tensorflow:${TF_IMAGE_TAG}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies before the code: editing the code does not redo this layer.
COPY requirements.txt .
RUN python3 -m pip install --no-cache-dir -r requirements.txt

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
