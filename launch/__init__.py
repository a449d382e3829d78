"""Launchers for multi-worker, Kubernetes, Vertex AI and TPU VM runs (see launch/README.md)."""
