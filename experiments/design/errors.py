"""The one error of a design's bad input."""

from __future__ import annotations

from experiments.prediction.runs import PredictionError

__all__ = ["DesignError"]


class DesignError(PredictionError):
    """Input a design cannot use (the message says what can); the CLI prints it as one error line.

    A :class:`~experiments.prediction.runs.PredictionError`, so everything that catches predict's
    errors (the CLI, the API's callers) catches it too.
    """
