"""Hiera position embeddings: structure, rewriting schemes and their registry."""

from .ops import abswin_grid, fit_global_window, grid_to_tokens, tokens_to_grid, window_periodicity
from .schemes import Scheme, embedding_digest, get_scheme, list_schemes, parse_schemes, reads_global_grid, register_scheme
from .spec import PosEmbedSpec, spec_from_model

__all__ = [
    "PosEmbedSpec", "Scheme", "abswin_grid", "embedding_digest", "fit_global_window", "get_scheme", "grid_to_tokens",
    "list_schemes", "parse_schemes", "reads_global_grid", "register_scheme", "spec_from_model", "tokens_to_grid",
    "window_periodicity",
]
