"""Simulation of the sample efficiency of prompt experts (softmax-gated mixture-of-experts view).

NumPy/SciPy only; importable without torch. Modules: ``models`` (prompt families), ``fit``
(least squares), ``voronoi`` (losses), ``rates`` (slopes and verdicts), ``identifiability``,
``experiment`` (the simulation grid) and the CLI ``python -m theory.sample_efficiency``.
"""

__all__ = ["experiment", "fit", "identifiability", "models", "rates", "voronoi"]
