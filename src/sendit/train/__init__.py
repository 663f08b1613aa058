"""The training engine and what it stands on: models, batching, device and precision, checkpoints, measurements, metrics."""
