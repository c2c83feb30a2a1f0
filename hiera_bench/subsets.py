"""Scoring over a subset of the model's classes, as ImageNet-R and ImageNet-A are scored.

Both sets hold 200 of the 1000 ImageNet classes; their papers and timm's ``validate.py --valid-labels``
restrict the logits to those 200 before top-k, softmax and NLL. Here the other logits are set to
``-inf``, which gives the same top-k, probabilities and NLL as slicing while class ids stay the model's.
The class lists are timm's own (``timm/data/_info/imagenet_{r,a}_synsets.txt``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    import torch

from .errors import UserError

#: Named subsets and the timm file listing their wnids.
KNOWN = {"imagenet-r": "imagenet_r_synsets.txt", "imagenet-a": "imagenet_a_synsets.txt"}


@dataclass(frozen=True)
class ClassSubset:
    """The classes a cell is scored over: its name (part of the cell's identity) and their wnids."""

    name: str
    wnids: tuple[str, ...]
    #: the file's numbers as written where it lists timm's class indices (``wnids`` are then theirs)
    indices: tuple[str, ...] = ()

    def _classes(self, names: Iterable[str]) -> tuple[str, ...]:
        """The subset's classes as ``names`` spell them: a model whose label names are all numbers (a fine-tune on
        digits) reads a file of numbers as those names, any other model as timm's ImageNet indices."""
        names = list(names)
        return self.indices if self.indices and names and all(n.isdigit() for n in names) else self.wnids

    def mask(self, class_names: Sequence[str]) -> torch.Tensor:
        """Bool (num_classes,): True for the model's classes in the subset."""
        classes = self._classes(class_names)
        index = {name: i for i, name in enumerate(class_names)}
        missing = [w for w in classes if w not in index]
        if missing:
            raise UserError(f"--class-subset {self.name}: {len(missing)} of its classes are not the model's "
                            f"(e.g. {missing[0]}); it needs a model with ImageNet-1k classes")
        import torch  # here: plots and reports read a subset's classes without torch

        mask = torch.zeros(len(class_names), dtype=torch.bool)
        mask[[index[w] for w in classes]] = True
        return mask


    def require_covers(self, data_wnids: set[str]) -> None:
        """Refuse data with classes outside the subset: their logits are left out, so their images could never
        be scored right and would only lower every figure."""
        outside = sorted(data_wnids - set(self._classes(data_wnids)))
        if not outside:
            return
        covering = [name for name in KNOWN if data_wnids <= set(subset(name).wnids)]
        hint = f" (the data's classes are all in {covering[0]})" if covering else ""
        raise UserError(f"--class-subset {self.name}: {len(outside)} of the data's {len(data_wnids)} classes are not in "
                        f"it (e.g. {', '.join(outside[:3])}), so their images could never be scored right; give the "
                        f"subset the data was made for{hint}, or a file listing every class it holds")


def _timm_list(filename: str) -> tuple[str, ...]:
    text = resources.files("timm.data").joinpath("_info", filename).read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def subset(spec: str) -> ClassSubset:
    """``imagenet-r``, ``imagenet-a`` or a text file of wnids, one per line, or of class indices in timm's
    ImageNet order (sorted wnids), as timm's ``validate.py --valid-labels`` file lists them."""
    if spec in KNOWN:
        return ClassSubset(spec, _timm_list(KNOWN[spec]))
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--class-subset {spec!r}: give imagenet-r, imagenet-a or a text file of wnids (or timm's "
                        "class indices), one per line")
    try:
        # utf-8-sig: Windows editors start a text file with a byte-order mark, which would join the first wnid
        wnids = tuple(line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--class-subset {path} cannot be read as text ({type(exc).__name__}); give a text file of "
                        "wnids, one per line") from None
    if not wnids:
        raise UserError(f"--class-subset {path} lists no class; give one wnid per line")
    indices = wnids if all(w.isdigit() for w in wnids) else ()
    if indices:
        wnids = _indexed(path, indices)
    # the digest is of the wnids: a file of indices and one of the same classes' wnids are one subset
    digest = hashlib.sha256("\n".join(sorted(wnids)).encode()).hexdigest()[:8]
    return ClassSubset(f"{path.name}:{digest}", wnids, indices)


def _indexed(path: Path, indices: tuple[str, ...]) -> tuple[str, ...]:
    """The wnids of timm's ImageNet class indices."""
    from .data.base import imagenet_wnids  # imports datasets: only for a file of indices

    order = imagenet_wnids()
    outside = next((i for i in indices if int(i) >= len(order)), None)
    if outside is not None:
        raise UserError(f"--class-subset {path} lists class index {outside}, outside ImageNet-1k's 0-{len(order) - 1}; "
                        "give timm's class indices or wnids, one per line")
    return tuple(order[int(i)] for i in indices)


def detect(data_wnids: set[str]) -> ClassSubset | None:
    """The named subset whose classes are exactly the data's (an ImageNet-R or -A folder), else None."""
    for name in KNOWN:
        known = subset(name)
        if set(known.wnids) == data_wnids:
            return known
    return None
