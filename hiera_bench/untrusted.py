"""The one place where hiera-bench opens files it did not just write: checkpoints and their configs, data
files, label files, run-folder files being resumed, results tables and baselines.

Any of them can be cut short by a failed download or copy, overwritten with something else, or edited by
hand. Whatever a parser raises on such bytes is about the bytes, not a bug, so :func:`reading` turns it into
a :class:`~hiera_bench.errors.UserError` that names the file, says what is wrong with it and what fixes it
(re-download, ``--force``, re-run the sweep). Readers also check the shape of what they parsed (a JSON list
where a dict belongs, a table without its columns): a well-formed file of the wrong kind is a mistake too.

Blocks wrapped in :func:`reading` hold only the parse, so a real bug elsewhere keeps its traceback; the
parser's own exception stays chained for ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import pickletools
import tarfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import UserError

#: What fixes a file that came from elsewhere (a download, a copy).
REDOWNLOAD = "re-download or re-copy it"
#: What fixes a merged view (results, predictions) of a run folder.
RESWEEP = "re-run the sweep into that folder to rebuild it"


def first_line(exc: BaseException, most: int = 120) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= most else text[:most].rsplit(" ", 1)[0] + " …"


def problem(path: Path, exc: BaseException | None = None) -> str:
    """What is wrong with ``path``, as a phrase that follows its name (``is empty (0 bytes)``)."""
    try:
        if isinstance(exc, IsADirectoryError) or (exc is None and path.is_dir()):
            return "is a folder, not a file"
        if not path.exists():
            return "does not exist"
        if path.is_file() and path.stat().st_size == 0:
            return "is empty (0 bytes)"
    except OSError as err:  # a path component that is a file, a loop of links
        return f"cannot be opened ({err.strerror or type(err).__name__})"
    if isinstance(exc, UnicodeDecodeError):
        return f"is not UTF-8 text (byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"is not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
    if isinstance(exc, PermissionError):
        return "cannot be read (permission denied)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot be read ({exc.strerror})"
    return f"is truncated or corrupt ({first_line(exc)})" if exc is not None else "is not readable"


@contextmanager
def reading(path: str | Path, what: str, fix: str) -> Iterator[None]:
    """Turn any failure of the parse inside the block into ``<what> <path> <problem>; <fix>``."""
    try:
        yield
    except UserError:
        raise
    # the block holds one parse of untrusted bytes: whatever the parser raises (json, pyarrow, tarfile,
    # safetensors, scipy and torch each have their own types, some plain RuntimeError) describes the file
    except Exception as exc:
        raise UserError(f"{what} {path} {problem(Path(path), exc)}; {fix}") from exc


def plain_name(name: str) -> bool:
    """One printable path component: a name that may become a folder's (not empty, ``.``, ``..``, no slash or line
    break), so that no name a file gives can place what is written elsewhere."""
    return bool(name.strip()) and name not in (".", "..") and not any(c in name for c in "/\\\0\n\r\t")


def check_label(label: str | None) -> None:
    """``--label`` names a run folder and a column group of reports: printable, one path component."""
    if label is None:
        return
    if not plain_name(label):
        raise UserError(f"--label {label!r} must be a non-empty name without slashes or line breaks, "
                        "e.g. --label small-ft320")


def wrong(path: str | Path, what: str, found: str, fix: str) -> UserError:
    """The error for a file that parses but is not what ``what`` should be."""
    return UserError(f"{what} {path} {found}; {fix}")


def read_text(path: str | Path, what: str, fix: str) -> str:
    with reading(path, what, fix):
        return Path(path).read_text(encoding="utf-8")


def read_json(path: str | Path, what: str, fix: str, expect: type | tuple[type, ...] = dict) -> Any:
    """A JSON file that must hold an ``expect`` (dict, list or either) at its top."""
    with reading(path, what, fix):
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, expect):
        kinds = expect if isinstance(expect, tuple) else (expect,)
        kind = " or ".join({dict: "an object", list: "a list"}.get(k, k.__name__) for k in kinds)
        raise wrong(path, what, f"holds JSON {type(raw).__name__} where {kind} belongs", fix)
    return raw


def read_toml(path: str | Path, what: str, fix: str) -> dict:
    """A TOML file (a table at its top, as TOML always has)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    with reading(path, what, fix):
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))


def require_keys(raw: dict, keys: Sequence[str], path: str | Path, what: str, fix: str) -> dict:
    missing = [k for k in keys if k not in raw]
    if missing:
        raise wrong(path, what, f"lacks {', '.join(missing)}", fix)
    return raw


def read_parquet(path: str | Path, what: str, fix: str, columns: Sequence[str] = (),
                 optional: Sequence[str] = (), where: Any = None, dictionary: Sequence[str] = ()):
    """A parquet file as an Arrow table, holding at least ``columns`` (read with whichever of ``optional`` it has;
    with neither given, every column); only its rows ``where`` (a pyarrow filter) holds, when given, and the
    columns of ``dictionary`` that it reads dictionary-encoded."""
    import pyarrow.parquet as pq

    wanted = parquet_columns(path, what, fix, columns, optional)
    with reading(path, what, fix):
        return pq.read_table(path, columns=wanted, filters=where,
                             read_dictionary=[c for c in dictionary if c in (wanted or [c])] or None)


def parquet_columns(path: str | Path, what: str, fix: str, columns: Sequence[str] = (),
                    optional: Sequence[str] = ()) -> list[str] | None:
    """The columns :func:`read_parquet` reads of the file (None: every one), from its footer alone; a file without
    one of ``columns`` is refused."""
    import pyarrow.parquet as pq

    with reading(path, what, fix):
        names = pq.read_schema(path).names
    missing = [c for c in columns if c not in names]
    if missing:
        raise wrong(path, what, f"has no column {', '.join(missing)}", fix)
    return [*columns, *(c for c in optional if c in names)] or None


def check_parquet(path: str | Path, what: str, fix: str) -> list[str]:
    """The file's footer (its last bytes) is read: a file cut short anywhere fails here, not mid-sweep.
    Returns its column names."""
    import pyarrow.parquet as pq

    with reading(path, what, fix):
        return pq.read_metadata(path).schema.to_arrow_schema().names


def odd_one_out(found: dict[str, list[str]], what: str, kind: str, fix: str) -> None:
    """Files of one data set must agree on ``kind`` (columns, member types): name the first that does not.

    Readers of a whole set (datasets) refuse a mixed one without saying which file is the odd one.
    """
    files = list(found)
    odd = next((f for f in files if found[f] != found[files[0]]), None)
    if odd is not None:
        raise UserError(f"{what} {odd} has the {kind} {', '.join(found[odd]) or 'none'} but {files[0]} has "
                        f"{', '.join(found[files[0]]) or 'none'}; they are not one data set: {fix}")


def check_arrow(path: str | Path, what: str, fix: str) -> list[str]:
    """An Arrow stream file (``save_to_disk``'s shards) read through, memory-mapped (no copy); its columns."""
    import pyarrow as pa

    with reading(path, what, fix):
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all().schema.names


def check_tar(path: str | Path, what: str, fix: str) -> list[str]:
    """Every member's header is read and its data must lie inside the file, followed by tar's end marker;
    returns the members' kinds (what follows the first dot of their names: ``jpg``, ``cls``, ``json``).

    ``tarfile`` (and the webdataset reader on top of it) stops quietly at a shard cut between or inside
    members: the images after the cut would silently leave the set. Only headers are read (one seek per member).
    """
    path = Path(path)
    kinds: set[str] = set()
    with reading(path, what, fix):
        size = path.stat().st_size
        with tarfile.open(path, mode="r:") as tar:
            end = 0
            for member in tar:
                kinds.add(member.name.rpartition("/")[2].partition(".")[2])
                end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                if member.offset_data + member.size > size:
                    raise wrong(path, what, f"is truncated inside member {member.name}", fix)
        with open(path, "rb") as fh:
            fh.seek(end)
            marker = fh.read(2 * tarfile.BLOCKSIZE)
    if marker != bytes(2 * tarfile.BLOCKSIZE):
        raise wrong(path, what, "is truncated (no end-of-archive marker after its last member)", fix)
    return sorted(kinds)


def _parses_as_pickle(path: Path) -> bool:
    """Whether the file is a well-formed pickle stream (or a torch zip whose pickle is): then a refusal by
    ``weights_only`` is about what it holds, not about damage."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        for _ in pickletools.genops(data):
            pass
        return True
    except Exception:  # any failure to walk the opcodes means the bytes are not a pickle
        return False


def load_torch_weights(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` of an untrusted ``.pth/.pt/.bin/.pth.tar``: pickled code is refused as
    such, a damaged file as damaged."""
    import torch

    path = Path(path)
    what = "checkpoint"
    if not path.is_file() or path.stat().st_size == 0:
        raise UserError(f"{what} {path} {problem(path)}; {REDOWNLOAD}")
    try:
        # timm's train.py saves its argparse options beside the weights (``args``): plain values, no code
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _parses_as_pickle(path):
            raise UserError(f"{what} {path} {problem(path, exc)}; {REDOWNLOAD}") from exc
        first = next((line.strip() for line in str(exc).splitlines() if "Unsupported" in line), first_line(exc))
        raise UserError(
            f"{what} {path} cannot be loaded as plain tensors (weights_only=True refused it: {first}); "
            "hiera-bench never unpickles code: convert it to .safetensors"
        ) from exc
    except Exception as exc:  # torch reports a cut zip as RuntimeError, a cut pickle as EOFError, ...
        raise UserError(f"{what} {path} {problem(path, exc)}; {REDOWNLOAD}") from exc


def is_safetensors(path: str | Path) -> bool:
    """Whether the file starts as a safetensors file does, whatever its name: an 8-byte little-endian header length
    that fits the file, then the header's JSON object (a torch zip starts ``PK``, a pickle ``\\x80``)."""
    try:
        with open(path, "rb") as fh:
            head, size = fh.read(9), os.fstat(fh.fileno()).st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8


def load_safetensors(path: str | Path) -> dict:
    from safetensors.torch import load_file

    with reading(path, "checkpoint", REDOWNLOAD):
        return load_file(str(path))


def require_whole_rows(path: Path) -> None:
    """Raise where a CSV file has a record of fewer fields than its header: pandas reads a file cut inside a row as
    that row with its last values empty, a cell that would pass for a measurement."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:
        records = csv.reader(f)
        header = next(records, [])
        for line, record in enumerate(records, start=2):
            if record and len(record) < len(header):
                raise ValueError(f"record {line} has {len(record)} of the header's {len(header)} fields: cut short")

