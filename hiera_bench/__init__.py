"""hiera-bench: how Hiera vision transformers hold their accuracy when the input size changes.

The library behind the ``hiera-bench`` CLI. Heavy imports (torch, timm) happen in the
sub-modules, so ``import hiera_bench`` stays cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
