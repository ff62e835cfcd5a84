"""Training and evaluation: configuration, trainer, distributed processes, metrics."""
