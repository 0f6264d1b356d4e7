"""Predicted cells as the product: load a trained run, roll its policy from control cells, write AnnData.

* :mod:`experiments.prediction.predict`: runs, what can be predicted, start cells, rollouts.
* :mod:`experiments.prediction.output`: the AnnData layout and the atomic ``.h5ad`` writer.
* :mod:`experiments.prediction.synthetic_check`: predicted vs true effect on the synthetic default.
"""
