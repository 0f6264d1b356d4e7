"""The pipeline around the env and the algorithms: two-stage training, evaluation in gene space, the CLI."""
