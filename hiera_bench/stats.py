"""Statistics over per-image records (bootstrap CIs, paired differences, McNemar)."""

from __future__ import annotations


def annotate(table, predictions):
    """Add statistics columns to the tidy table from the per-image predictions (none yet)."""
    return table
