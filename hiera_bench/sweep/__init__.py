"""The sweep: every (scheme, size) cell of one checkpoint over one data set, in a single pass over the data.

``run_sweep(SweepConfig(...))`` validates the options, loads the checkpoint and data, plans one forward per
distinct embedding per size, evaluates them over images decoded once, builds one tidy row per cell and
writes the run folder's views. Modules: ``config`` (options), ``plan`` (forwards and cells), ``runtime``
(the device), ``evaluate`` (the image loop), ``records``, ``store`` (the run folder), ``rows`` (the tidy
table), ``views`` (merged outputs), ``provenance`` (run.json), ``run`` (the flow), ``shards`` (which
positions each cell lacks and each rank evaluates), ``distributed`` (the ranks of a torchrun job).
"""

from .config import AMP_DTYPES, Logged, Progress, Quiet, SweepConfig, several, validate_config
from .run import SweepResult, run_sweep

__all__ = ["AMP_DTYPES", "Logged", "Progress", "Quiet", "SweepConfig", "SweepResult", "run_sweep", "several", "validate_config"]
