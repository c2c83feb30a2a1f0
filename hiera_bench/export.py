"""Write a Hiera rewritten for one input size as a plain timm checkpoint folder.

The folder holds ``model.safetensors`` + ``config.json`` in timm's hub layout, so plain timm
loads it without hiera-bench::

    timm.create_model("local-dir:EXPORT_DIR", pretrained=True)

The exported model is always a full-grid Hiera (``abs_win_pos_embed=False``) whose
``pos_embed`` is the chosen scheme's embedding at the new size: exactly the model the sweep
evaluates for that scheme and size.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError, listed
from .grid import parse_grid
from .models import LoadedModel, build_at_size, load_model
from .io import MARKERS, atomic_write_bytes, atomic_write_json, atomic_write_text
from .posembed import get_scheme, spec_from_model

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
#: Written into every export folder: ``--force`` replaces a folder only when it is one of ours.
MARKER_NAME = MARKERS["export"]
MARKER_TEXT = "Written by `hiera-bench export`; `hiera-bench export --force` may replace this folder.\n"
EXPORT_FILES = frozenset({WEIGHTS_NAME, CONFIG_NAME, MARKER_NAME})


@dataclass(frozen=True)
class ExportResult:
    """What was written, and what a user should know about it."""

    out: Path
    name: str
    arch: str
    size: int
    scheme: str
    native_size: int
    pos_embed_kind: str
    config: dict[str, Any]

    @property
    def size_change_only(self) -> bool:
        """An abs-win checkpoint under ``abswin``: timm itself does this with ``img_size=R``."""
        return self.pos_embed_kind == "abswin" and self.scheme == "abswin"

    def timm_call(self) -> str:
        """The plain-timm line that loads this export."""
        return f'timm.create_model("local-dir:{self.out.resolve()}", pretrained=True)'


def parse_size(res: str, stride: int) -> int:
    """One valid input size from ``--res`` (an export is for exactly one size)."""
    sizes = parse_grid(res, stride).sizes
    if len(sizes) != 1:
        raise UserError(f"--res {res!r}: export writes one size; give a single size such as {sizes[-1]}")
    return sizes[0]


def default_out(loaded: LoadedModel, size: int, scheme: str) -> Path:
    return Path("exports") / f"{loaded.name}-{size}-{scheme}"


def export_config(loaded: LoadedModel, net: torch.nn.Module, size: int, provenance: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` as timm's ``save_config_for_hf`` lays it out, for a full-grid Hiera at ``size``.

    ``model_args`` carry ``img_size`` and ``abs_win_pos_embed=False`` so that timm builds the
    right model from the folder alone; ``pretrained_cfg`` keeps only fields timm's
    ``PretrainedCfg`` knows (it rejects others) and drops every weight-source field.
    """
    from timm.models import PretrainedCfg

    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    dropped = {"url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "architecture", "tag",
               "test_input_size", "test_crop_pct", "pool_size", "test_pool_size", "label_offset", "custom_load"}
    cfg = {k: v for k, v in loaded.pretrained_cfg.items() if k in known and k not in dropped and v is not None}
    cfg.update(input_size=[3, size, size], fixed_input_size=True, num_classes=net.num_classes,
               first_conv="patch_embed.proj", classifier="head.fc")
    if loaded.label_names:
        cfg["label_names"] = list(loaded.label_names)
    model_args = {k: v for k, v in loaded.model_kwargs.items() if k not in ("num_classes", "img_size")}
    model_args.update(img_size=size, abs_win_pos_embed=False)
    config: dict[str, Any] = {
        "architecture": loaded.arch,
        "model_name": f"{loaded.name}@{size}",
        "num_classes": net.num_classes,
        "num_features": net.num_features,
        "model_args": model_args,
        "pretrained_cfg": cfg,
        "hiera_bench": provenance,
    }
    if loaded.label_names:
        config["label_names"] = list(loaded.label_names)
    return {k: v for k, v in config.items() if v is not None}


def _weights_bytes(net: torch.nn.Module) -> bytes:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return save(tensors, metadata={"format": "pt"})


def _check_target(out: Path, force: bool) -> None:
    """``out`` may be written: absent, empty, or (with ``force``) an earlier export and nothing else.

    ``--force`` once deleted whatever the folder held (a user's thesis.tex): it now replaces only a folder
    that carries this tool's marker and holds no file an export does not write.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} is a file; choose a folder for the export")
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not names:
        return
    if not force:
        raise UserError(f"-o {out} already exists and is not empty; choose another -o or pass --force to replace it")
    foreign = [n for n in names if n not in EXPORT_FILES]
    if foreign or MARKER_NAME not in names:
        why = f"it holds {listed(foreign)}" if foreign else f"it has no {MARKER_NAME} marker"
        raise UserError(f"-o {out} is not an export of hiera-bench ({why}); --force replaces only an earlier "
                        "export: choose another -o, or move the files away yourself")


def _publish(staging: Path, out: Path) -> None:
    """Move the finished staging folder to ``out``; an old export is swapped out only once the new one is whole."""
    old = None
    if out.is_dir():
        old = _sibling(out, "old")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sibling(path: Path, what: str) -> Path:
    return path.parent / f".{path.name}.{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def export_model(
    model: str | None,
    res: str,
    scheme: str,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    force: bool = False,
    global_size: int | None = None,
) -> ExportResult:
    """Rewrite ``model`` for input size ``res`` with ``scheme`` and write it as a timm checkpoint folder."""
    from .sweep.plan import plan_forwards

    scheme_obj = get_scheme(scheme)
    loaded = load_model(model, checkpoint)
    size = parse_size(res, loaded.stride)
    target = Path(out) if out else default_out(loaded, size, scheme_obj.name)
    _check_target(target, force)
    gsize = (global_size, global_size) if global_size and loaded.pos_embed_kind == "full" else None
    spec = spec_from_model(loaded.model, loaded.native_size, gsize)
    # the sweep's own planning path, so the export is the very model the sweep scored
    embedding = plan_forwards(spec, [scheme_obj], [size], loaded.geometry)[0].embedding
    net = build_at_size(loaded, size, embedding)
    provenance = {
        "source_model": loaded.name, "source_checkpoint": loaded.checkpoint, "source_sha256": loaded.sha256,
        "native_size": loaded.native_size, "img_size": size, "scheme": scheme_obj.name,
        "source_pos_embed_kind": loaded.pos_embed_kind,
        "global_size": list(spec.global_size) if loaded.pos_embed_kind == "full" and scheme_obj.name == "abswin" else None,
    }
    config = export_config(loaded, net, size, provenance)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "tmp")
    staging.mkdir()
    try:
        atomic_write_bytes(staging / WEIGHTS_NAME, _weights_bytes(net))
        atomic_write_json(staging / CONFIG_NAME, config)
        atomic_write_text(staging / MARKER_NAME, MARKER_TEXT)
        _check_target(target, force)  # another export may have landed meanwhile
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out=target, name=loaded.name, arch=loaded.arch, size=size, scheme=scheme_obj.name,
                        native_size=loaded.native_size, pos_embed_kind=loaded.pos_embed_kind, config=config)
