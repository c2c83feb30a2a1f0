"""Checkpoints swept by one command share decoded images: the later ones read the crops the earlier ones kept,
get the same per-image records as a run of their own, and the crops are gone when the command ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pandas as pd
import pytest
import torch

from hiera_bench.data import open_data
from hiera_bench.data import shared as shared_mod
from hiera_bench.data.loader import MultiSizeImages, collate
from hiera_bench.data.shared import PREFIX, SharedDecodes
from hiera_bench.preprocess import EvalPreprocess, MultiSizeTransform
from hiera_bench.testing import WNIDS

RECORD_COLUMNS = ["image_id", "label", "pred", "top1", "top5", "nll"]


def _records(run_dir, scheme: str, size: int) -> pd.DataFrame:
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    cell = preds[(preds["scheme"] == scheme) & (preds["img_size"] == size)]
    return cell[[c for c in RECORD_COLUMNS if c in cell.columns]].sort_values("image_id").reset_index(drop=True)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The temp dir the crops go in (tempfile caches it, so it is set there, not in $TMPDIR)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def test_the_second_checkpoint_reads_the_firsts_crops_and_gets_its_own_numbers(cli, full_ckpt, abswin_ckpt,
                                                                                class_folder, tmp_path, private_tmp):
    same = ("--crop-pct", "0.875")  # the abs-win checkpoint's own is 0.95: another geometry
    result = cli("sweep", "-c", full_ckpt, "-c", abswin_ckpt, "--label", "a", "--label", "b", "--data", class_folder,
                 "--res", "64,96", *same, "--device", "cpu", "-b", "4", "-q", "--no-plots", "-o", tmp_path / "both")
    assert result.code == 0, result.err
    alone = cli("sweep", "-c", abswin_ckpt, "--data", class_folder, "--res", "64,96", *same, "--device", "cpu", "-b",
                "4", "-q", "--no-plots", "-o", tmp_path / "alone")
    assert alone.code == 0, alone.err
    first = json.loads((tmp_path / "both" / "a" / "run.json").read_text())
    second = json.loads((tmp_path / "both" / "b" / "run.json").read_text())
    n = second["data"]["n_images"]
    assert first["decode"] == {"decoder": "pil", "shared_crops": 0, "decoded": n}
    assert second["decode"] == {"decoder": "pil", "shared_crops": n, "decoded": 0}
    assert "decode" not in json.loads((tmp_path / "alone" / "run.json").read_text())
    for scheme in ("interp", "abswin"):
        for size in (64, 96):
            pd.testing.assert_frame_equal(_records(tmp_path / "both" / "b", scheme, size),
                                          _records(tmp_path / "alone", scheme, size))
    assert second["cells"] == json.loads((tmp_path / "alone" / "run.json").read_text())["cells"]
    assert not list(private_tmp.glob(f"{PREFIX}*")), "the command must remove its crops"


def test_crops_are_shared_by_geometry(cli, full_ckpt, abswin_ckpt, class_folder, tmp_path, private_tmp):
    """Three checkpoints: the second crops at its own crop_pct (0.95), so it decodes and keeps its own; the third,
    the first checkpoint again, reads the first's and gets the first's records exactly."""
    result = cli("sweep", "-c", full_ckpt, "-c", abswin_ckpt, "-c", full_ckpt, "--label", "a", "--label", "b",
                 "--label", "c", "--data", class_folder, "--res", "64", "--device", "cpu", "-b", "4", "-q",
                 "--no-plots", "-o", tmp_path / "three")
    assert result.code == 0, result.err
    runs = [json.loads((tmp_path / "three" / label / "run.json").read_text()) for label in "abc"]
    n = runs[0]["data"]["n_images"]
    assert [r["decode"]["shared_crops"] for r in runs] == [0, 0, n]
    for scheme in ("interp", "abswin"):
        pd.testing.assert_frame_equal(_records(tmp_path / "three" / "a", scheme, 64),
                                      _records(tmp_path / "three" / "c", scheme, 64))


def test_crops_read_back_are_the_decoded_bytes_in_worker_processes(class_folder, tmp_path):
    data = open_data(str(class_folder), WNIDS)
    transform = MultiSizeTransform(EvalPreprocess.from_config({}), (64, 96))
    with SharedDecodes(runs=2, root=tmp_path) as decodes:
        keep = decodes.crops(EvalPreprocess.from_config({}).as_dict(), "fp", "state", len(data), [(64, 0.875), (96, 0.875)])
        loader = torch.utils.data.DataLoader(MultiSizeImages(data.dataset, transform, shared=keep), batch_size=5,
                                             num_workers=2, collate_fn=collate)
        decoded = list(loader)
        read = decodes.crops(EvalPreprocess.from_config({}).as_dict(), "fp", "state", len(data), [(64, 0.875), (96, 0.875)])
        again = list(torch.utils.data.DataLoader(MultiSizeImages(data.dataset, transform, shared=read), batch_size=5,
                                                 collate_fn=collate))
        assert len(list(tmp_path.glob(f"{PREFIX}*"))) == 1
    assert sum(b.shared for b in decoded) == 0 and sum(b.shared for b in again) == len(data)
    for a, b in zip(decoded, again):
        assert a.image_ids == b.image_ids
        for size in (64, 96):
            assert torch.equal(a.crops[size, 0.875], b.crops[size, 0.875])
    assert not list(tmp_path.glob(f"{PREFIX}*"))


def test_another_geometry_data_state_or_size_never_reads_them(class_folder, tmp_path):
    data = open_data(str(class_folder), WNIDS)
    base = EvalPreprocess.from_config({})
    crop = {(64, 0.875): torch.full((3, 64, 64), 7, dtype=torch.uint8)}
    with SharedDecodes(runs=6, root=tmp_path) as decodes:
        first = decodes.crops(base.as_dict(), "fp", "state", len(data), [(64, 0.875)])
        first.keep(0, crop, True)
        assert torch.equal(first.read(0)[0][64, 0.875], crop[64, 0.875]) and first.read(0)[1] is True
        assert first.read(1) is None
        other_crop = decodes.crops(base.as_dict(), "fp", "state", len(data), [(64, 1.0)])
        other_interp = decodes.crops(EvalPreprocess.from_config({"interpolation": "bilinear"}).as_dict(), "fp", "state",
                                     len(data), [(64, 0.875)])
        other_files = decodes.crops(base.as_dict(), "fp", "touched", len(data), [(64, 0.875)])
        assert other_crop.read(0) is None and other_interp.read(0) is None and other_files.read(0) is None
        wider = decodes.crops(base.as_dict(), "fp", "state", len(data), [(64, 0.875), (96, 0.875)])
        assert wider.read(0) is None  # 96 px was never cut: decoded, and both sizes kept
        wider.keep(0, {(64, 0.875): crop[64, 0.875], (96, 0.875): torch.ones(3, 96, 96, dtype=torch.uint8)}, True)
        assert set(wider.read(0)[0]) == {(64, 0.875), (96, 0.875)}
        assert torch.equal(wider.read(0)[0][64, 0.875], crop[64, 0.875])
        # the command's last checkpoint keeps nothing: at a size no one kept it has nothing to read either
        assert decodes.crops(base.as_dict(), "fp", "state", len(data), [(64, 0.875), (128, 0.875)]) is None
    # mean and std are applied on the device, after the crops: they do not part them
    key = shared_mod.geometry_key
    assert key(base.as_dict(), "fp", "s") == key(EvalPreprocess.from_config({"mean": (0.5,) * 3}).as_dict(), "fp", "s")


def test_no_sharing_without_the_space_one_checkpoint_or_when_turned_off(class_folder, tmp_path, monkeypatch):
    said = []
    fields = EvalPreprocess.from_config({}).as_dict()
    monkeypatch.setattr(shared_mod, "SPARE_BYTES", 1 << 62)
    with SharedDecodes(runs=2, log=said.append, root=tmp_path) as decodes:
        assert decodes.crops(fields, "fp", "s", 10, [(64, 0.875)]) is None
    assert len(said) == 1 and "TMPDIR" in said[0] and "GB" in said[0]
    monkeypatch.setattr(shared_mod, "SPARE_BYTES", 0)
    with SharedDecodes(runs=1, root=tmp_path) as decodes:
        assert decodes.crops(fields, "fp", "s", 10, [(64, 0.875)]) is None
    monkeypatch.setenv("HIERA_BENCH_SHARE_DECODES", "0")
    with SharedDecodes(runs=2, root=tmp_path) as decodes:
        assert decodes.crops(fields, "fp", "s", 10, [(64, 0.875)]) is None


def test_the_crops_space_is_reserved_when_they_are_made(tmp_path):
    """The crop files were sparse and written through memory maps: when the temp disk filled after the space check
    (other jobs on a node), the next write killed the sweep with SIGBUS, no message, no clean-up (adv27). Their blocks
    are reserved up front now; a reservation the file system refuses means no sharing, said, and no file left."""
    fields = EvalPreprocess.from_config({}).as_dict()
    with SharedDecodes(runs=2, root=tmp_path) as decodes:
        kept = decodes.crops(fields, "fp", "s", 40, [(64, 0.875), (96, 0.875)])
        sizes = {f.name: (f.stat().st_size, f.stat().st_blocks * 512) for f in kept.folder.iterdir()}
        assert sizes["crops-96-0.875.u8"][0] == 40 * 3 * 96 * 96
        assert all(allocated >= size for size, allocated in sizes.values()), sizes
    # over the process's file-size limit (a real refusal by the kernel, EFBIG, as a full disk gives ENOSPC)
    script = f"""
import resource, signal
from pathlib import Path
from hiera_bench.data.shared import SharedDecodes
from hiera_bench.preprocess import EvalPreprocess
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
said = []
with SharedDecodes(runs=2, log=said.append, root=Path({str(tmp_path)!r})) as decodes:
    crops = decodes.crops(EvalPreprocess.from_config({{}}).as_dict(), "fp", "s", 100, [(64, 0.875), (96, 0.875)])
    print(crops is None, sorted(p.name for p in decodes.folder.rglob("*.u8")), said)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True [] ") and "could not reserve" in done.stdout and "TMPDIR" in done.stdout


def test_without_posix_fallocate_the_crops_are_shared_sparse(tmp_path, monkeypatch):
    """macOS and Windows have no os.posix_fallocate: every sweep of two checkpoints ended in an AttributeError."""
    monkeypatch.delattr(os, "posix_fallocate", raising=False)
    with SharedDecodes(runs=2, root=tmp_path) as decodes:
        kept = decodes.crops(EvalPreprocess.from_config({}).as_dict(), "fp", "s", 10, [(64, 0.875)])
        assert kept is not None and (kept.folder / "crops-64-0.875.u8").stat().st_size == 10 * 3 * 64 * 64


def test_a_killed_commands_crops_are_removed_by_the_next_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = shared_mod.writer().rsplit("-", 1)[0]
    stale = tmp_path / f"{PREFIX}{host}-{int(dead.stdout)}-abc123"
    live = tmp_path / f"{PREFIX}{host}-{os.getpid()}-def456"
    elsewhere = tmp_path / f"{PREFIX}otherhost-{int(dead.stdout)}-ghi789"
    for folder in (stale, live, elsewhere):
        (folder / "k").mkdir(parents=True)
    with SharedDecodes(runs=2, root=tmp_path):
        pass
    assert not stale.exists() and live.exists() and elsewhere.exists()
