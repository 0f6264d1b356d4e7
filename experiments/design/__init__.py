"""The inverse question: which perturbation set moves these start cells closest to that target state?

:mod:`~experiments.design.objective` (the run as a vectorised forward model, and the objective),
:mod:`~experiments.design.targets` (target cells projected into a run's latent space, signatures),
:mod:`~experiments.design.library` (which members a design may use),
:mod:`~experiments.design.search` (designers sharing one objective and one evaluation budget),
:mod:`~experiments.design.output` (``design.tsv``, ``design.h5ad``, plot, manifest). See ``docs/design.md``.
"""
