"""The sweep: every (scheme, size) cell of one checkpoint over one data set, in a single pass over the data.

``run_sweep(SweepConfig(...))`` validates the options, loads the checkpoint and data, plans one forward per
distinct embedding per size, evaluates them over images decoded once, builds one tidy row per cell and
writes the run folder's views. Modules: ``config`` (options), ``plan`` (forwards and cells), ``runtime``
(the device), ``evaluate`` (the image loop), ``records``, ``store`` (the run folder), ``rows`` (the tidy
table), ``views`` (merged outputs), ``provenance`` (run.json), ``run`` (the flow), ``shards`` (which
positions each cell lacks and each rank evaluates), ``distributed`` (the ranks of a torchrun job).
"""

from importlib import import_module
from typing import Any

#: Each name the package exports and its module, imported when first asked for: the readers of run folders
#: (``report``, ``check``, ``compare``) use ``store``, ``rows`` and ``views`` and need neither torch nor timm.
_EXPORTS = {"AMP_DTYPES": "config", "Logged": "config", "Progress": "config", "Quiet": "config", "SweepConfig": "config",
            "several": "config", "validate_config": "config", "SweepResult": "run", "run_sweep": "run"}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
