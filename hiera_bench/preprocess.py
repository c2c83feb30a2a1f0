"""Eval preprocessing: timm's transform, split so that one decode serves every size.

timm's eval pipeline is ``Resize(floor(R / crop_pct)) -> CenterCrop(R) -> ToTensor -> Normalize``.
The geometric part runs on the PIL image once per size (in DataLoader workers, or in decode threads
on a CPU device) and yields uint8 tensors; the float conversion and normalisation run on the device,
batched, with the same arithmetic as torchvision, so the tensors are bit-identical to
``timm.data.create_transform(...)(image)``.

The resize is timm's own PIL call on the whole image. Resizing only the cropped region (PIL's
``box=``) is cheaper but not bit-identical: PIL takes the box as float32 and, since Pillow 13, picks
the pass order by the scale factors, so the crop's pixels move by 1-16 levels on most images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .errors import UserError


@dataclass(frozen=True)
class EvalPreprocess:
    """The eval preprocessing of a checkpoint (its pretrained config, with user overrides)."""

    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_mode: str = "center"
    #: "pil": timm's decode and resize, bit-identical; "device:<type>": torchvision's decode_jpeg and tensor
    #: resize on that device (nvJPEG on CUDA), not bit-identical, so part of the cells' identity
    decode: str = "pil"

    @classmethod
    def from_config(cls, cfg: dict[str, Any], crop_pct: float | None = None, interpolation: str | None = None,
                    decode: str = "pil") -> "EvalPreprocess":
        """The checkpoint's pretrained config with the user's overrides; a value timm's eval transform would
        fail on deep inside (a bare KeyError for an unknown interpolation) is refused here, saying where it came from."""
        source = "the checkpoint's pretrained_cfg"
        try:
            out = cls(
                crop_pct=float(crop_pct if crop_pct is not None else cfg.get("crop_pct", 0.875)),
                interpolation=interpolation or cfg.get("interpolation", "bicubic"),
                mean=_three(cfg.get("mean", (0.485, 0.456, 0.406))),
                std=_three(cfg.get("std", (0.229, 0.224, 0.225))),
                crop_mode=cfg.get("crop_mode") or "center",
                decode=decode,
            )
        except (TypeError, ValueError) as exc:
            raise UserError(f"{source} has an invalid crop_pct, mean or std ({exc}); fix the checkpoint's "
                            "config.json") from None
        if out.interpolation not in interpolations():
            where = "--interpolation" if interpolation else f"{source}'s interpolation"
            raise UserError(f"{where} {out.interpolation!r} is not one of timm's: {', '.join(interpolations())}")
        if not 0.0 < out.crop_pct <= 1.0:
            raise UserError(f"{source}'s crop_pct {out.crop_pct} is not in (0, 1]; pass --crop-pct")
        return out

    def as_dict(self) -> dict[str, Any]:
        """The fields that decide the pixels; ``decode`` only where it is not timm's own (so cells of the
        PIL path keep the keys they had before the option existed)."""
        fields = asdict(self)
        if fields["decode"] == "pil":
            del fields["decode"]
        return fields

    def timm_transform(self, size: int):
        """timm's own eval transform at ``size`` (the reference this module must match)."""
        from timm.data import create_transform

        return create_transform(
            input_size=(3, size, size), is_training=False, crop_pct=self.crop_pct,
            crop_mode=self.crop_mode, interpolation=self.interpolation, mean=self.mean, std=self.std,
        )

    def geometric(self, size: int):
        """The PIL-side steps of :meth:`timm_transform` (everything before ToTensor)."""
        from torchvision import transforms

        steps = self.timm_transform(size).transforms
        cut = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
        tail = [type(t).__name__ for t in steps[cut:]]
        if tail != [type(steps[cut]).__name__, "Normalize"]:
            raise RuntimeError(f"unexpected timm eval transform tail {tail}")
        return transforms.Compose(steps[:cut])


def interpolations() -> tuple[str, ...]:
    """The resize modes timm's eval transform takes by name (its ``str_to_interp_mode`` table)."""
    from timm.data import transforms

    return tuple(getattr(transforms, "_str_to_pil_interpolation", None)
                 or ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"))


def _three(values: Any) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"{len(out)} values where 3 (one per channel) belong")
    return out  # type: ignore[return-value]


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> ``(3, H, W)`` uint8, as torchvision's ``to_tensor`` before its division.

    The HWC -> CHW copy is numpy's: it runs in decode threads, where a torch copy would start an
    OpenMP team per thread that spins against the forward's (measured 150 us alone, 7 ms beside a
    forward, vs 60 us for numpy at 224 px).
    """
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)))


#: A crop the loop cuts: ``(size, crop_pct)``.
View = tuple[int, float]


class MultiSizeTransform:
    """One decoded image -> a uint8 crop per view ``(size, crop_pct)``, each exactly timm's geometry for it
    (``crops``: the crop_pcts of ``--crop-pct 0.875,0.95``; by default the preprocessing's own)."""

    def __init__(self, preprocess: EvalPreprocess, sizes: Sequence[int], crops: Sequence[float] | None = None) -> None:
        crops = tuple(crops or (preprocess.crop_pct,))
        self.views: tuple[View, ...] = tuple((size, crop) for crop in crops for size in sizes)
        self.steps = {view: replace(preprocess, crop_pct=view[1]).geometric(view[0]) for view in self.views}

    def __call__(self, image: Image.Image) -> dict[View, torch.Tensor]:
        return {view: pil_to_uint8(self.steps[view](image)) for view in self.views}


def normalise(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 normalised, with torchvision's operation order."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(-1, 1, 1)
    # in place on the fresh float copy: the same three roundings as torchvision, without two temporaries
    return batch.to(torch.float32).div_(255).sub_(mean_t).div_(std_t)
