"""Simulation of the sample efficiency of prompt experts (softmax-gated mixture-of-experts view).

NumPy/SciPy only; importable without torch. Modules: ``families`` (the registry of prompt families:
``register_family`` adds one), ``models`` (the regression model), ``fit`` (bounded least squares),
``voronoi`` (losses), ``rates`` (slopes and verdicts), ``identifiability``, ``experiment`` (the simulation
grid), ``runner`` (pool and checkpoint), ``summary`` and the CLI ``python -m theory.sample_efficiency``.
"""

from theory.families import Prediction, register_family, standard_predictions, unregister_family

__all__ = [
    "Prediction",
    "experiment",
    "families",
    "fit",
    "identifiability",
    "models",
    "rates",
    "register_family",
    "standard_predictions",
    "summary",
    "unregister_family",
    "voronoi",
]
