"""Per-image records from logits, and cell metrics from records."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch

ECE_BINS = 15
#: The figures a failed cell leaves empty.
NO_RESULT = ("top1", "top5", "nll", "ece", "n_correct1", "n_correct5")


def non_finite_reason(which: str) -> str:
    """Why a cell whose forward gave NaN or inf logits is no result (``which``: of how many images)."""
    return (f"{which} gave non-finite logits (NaN or inf): the forward overflows; try another --amp (bf16, or "
            "none), or check the checkpoint's weights")


def failed_if_not_finite(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """A sweep's ``ok`` row whose mean nll is NaN as the failed row it is (None where it is not such a row). Rows
    made before cells with non-finite logits failed stood as ``ok``: NaN logits rank first in top-k, so top-1
    looked plausible; read back, they fail as a new sweep's would."""
    nll = row.get("nll")
    if row.get("status") != "ok" or not row.get("cell_key") or not isinstance(nll, float) or math.isfinite(nll):
        return None
    return {**row, **dict.fromkeys(NO_RESULT, float("nan")), "status": "failed",
            "reason": "its mean nll is not a number: " + non_finite_reason("its images")
                      + " (or the table lost its nll values)"}


def device_records(logits: torch.Tensor, targets: torch.Tensor, k: int = 5,
                   valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per image, on the logits' device: top-k class ids, correct@1, correct@k, nll and confidence (max softmax);
    over the classes ``valid`` marks when given (the rest get -inf, as if sliced away)."""
    import torch  # here, not at the top: the readers of run folders need no torch

    logits = logits.float()
    if valid is not None:
        logits = logits.masked_fill(~valid.to(logits.device), float("-inf"))
    targets = targets.to(logits.device)
    log_probs = torch.log_softmax(logits, dim=1)
    k = min(k, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    hit = topk == targets[:, None]
    return {
        "topk": topk.to(torch.int32),
        "correct1": hit[:, 0],
        "correct5": hit.any(dim=1),
        "nll": -log_probs.gather(1, targets[:, None]).squeeze(1),
        "confidence": log_probs.max(dim=1).values.exp(),
    }


def records_to_numpy(records: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.cpu().numpy() for key, value in records.items()}


def image_records(logits: torch.Tensor, targets: torch.Tensor, k: int = 5) -> dict[str, np.ndarray]:
    """:func:`device_records` as numpy arrays on the host."""
    return records_to_numpy(device_records(logits, targets, k))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with equal-width confidence bins over (0, 1], in percent."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.size == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(correct[sel].mean() - confidence[sel].mean())
    return 100.0 * total / confidence.size


def cell_metrics(correct1, correct5, nll, confidence) -> dict[str, float]:
    """Counts of the images that decoded, and from them top1/top5 in percent, mean nll and ECE, unrounded:
    every figure derived from these is computed from the counts, and rounded only where it is shown."""
    n = len(correct1)
    if n == 0:
        return {"n_images": 0, "n_correct1": 0, "n_correct5": 0, "top1": float("nan"), "top5": float("nan"),
                "nll": float("nan"), "ece": float("nan")}
    hits1, hits5 = int(np.sum(correct1)), int(np.sum(correct5))
    return {
        "n_images": int(n), "n_correct1": hits1, "n_correct5": hits5,
        "top1": 100.0 * hits1 / n, "top5": 100.0 * hits5 / n,
        "nll": float(np.mean(np.asarray(nll, dtype=np.float64))),
        "ece": expected_calibration_error(confidence, correct1),
    }
