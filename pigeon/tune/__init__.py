"""Autotuning: search kernel configs and compiler decisions per graph, and remember them.

``space`` generates the candidates, ``measure`` checks and times one, ``tuner`` searches
and ranks (:func:`tune`), ``cache`` keeps the choice on disk where compiled layers find
it (``PIGEON_AUTOTUNE=0`` turns that off).
"""

from pigeon.tune.tuner import Measurement, TuneResult, tune

__all__ = ["Measurement", "TuneResult", "tune"]
