"""Every file a user brings (checkpoints and their configs, data in each layout, label files), broken in every
way a download, a copy or an editor breaks it, read through the real CLI: exit 0 with the results an intact
file gives, or one ``error:`` line naming the file, exit 2, no traceback."""

from __future__ import annotations

import io
import tarfile

import pytest

from fuzzing import (Reader, assert_promise, build_workspace, cases, corrupt, fresh_workspace, json_bytes,
                     parquet_bytes, sweep_argv, sweep_table)

COMPARED = ["scheme", "img_size", "n_images", "n_failed", "top1"]


def _safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"x": torch.zeros(2)})


def _pth() -> bytes:
    import torch

    sink = io.BytesIO()
    torch.save({"x": torch.zeros(2)}, sink)
    return sink.getvalue()


def _tar() -> bytes:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w") as tar:
        info = tarfile.TarInfo("ILSVRC2012_val_00000001.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return sink.getvalue()


def _mat() -> bytes:
    from scipy.io import savemat

    sink = io.BytesIO()
    savemat(sink, {"x": 1})
    return sink.getvalue()


def _arrow() -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    table = pa.table({"a": [1]})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


READERS = (
    Reader("checkpoint config.json", lambda ws: ws / "ckpt" / "config.json", lambda ws: sweep_argv(ws, ws / "val"),
           lambda: json_bytes({"architecture": "hiera_tiny_224", "model_args": {"no_such_arg": 1}}), text=True),
    Reader("checkpoint .safetensors", lambda ws: ws / "ckpt" / "model.safetensors",
           lambda ws: sweep_argv(ws, ws / "val"), _safetensors),
    Reader("checkpoint .pth", lambda ws: ws / "ckpt-pth" / "model.pth",
           lambda ws: [*sweep_argv(ws, ws / "val")[:1], "--checkpoint", ws / "ckpt-pth", *sweep_argv(ws, ws / "val")[3:]],
           _pth),
    Reader("parquet data file", lambda ws: ws / "parquet" / "validation-00000-of-00002.parquet",
           lambda ws: sweep_argv(ws, ws / "parquet"), lambda: parquet_bytes({"a": [1]}), fix="re-download"),
    Reader("webdataset shard", lambda ws: ws / "wds" / "imagenet1k-validation-00.tar",
           lambda ws: sweep_argv(ws, ws / "wds"), _tar, fix="re-download"),
    Reader("saved dataset arrow file", lambda ws: ws / "saved" / "data-00000-of-00001.arrow",
           lambda ws: sweep_argv(ws, ws / "saved"), _arrow),
    Reader("Kaggle LOC_val_solution.csv", lambda ws: ws / "kaggle" / "LOC_val_solution.csv",
           lambda ws: sweep_argv(ws, ws / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC" / "val"),
           lambda: b"ImageId,PredictionString\nILSVRC2012_val_00000001\n", text=True),
    Reader("devkit ground truth", lambda ws: ws / "devkit" / "ILSVRC2012_devkit_t12" / "data" /
           "ILSVRC2012_validation_ground_truth.txt", lambda ws: sweep_argv(ws, ws / "devkit" / "val"),
           lambda: b"490\nfox\n", text=True),
    Reader("devkit meta.mat", lambda ws: ws / "devkit" / "ILSVRC2012_devkit_t12" / "data" / "meta.mat",
           lambda ws: sweep_argv(ws, ws / "devkit" / "val"), _mat),
    Reader("ReaL labels json", lambda ws: ws / "real.json",
           lambda ws: sweep_argv(ws, ws / "val", "--real-labels", ws / "real.json"),
           lambda: json_bytes({"ILSVRC2012_val_00000001": "n01751748"}), text=True),
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, full_ckpt):
    return build_workspace(tmp_path_factory.mktemp("fuzz-inputs") / "ws", full_ckpt)


@pytest.mark.parametrize("reader,corruption", cases(READERS), ids=lambda v: v.name.replace(" ", "-"))
def test_a_broken_input_file_is_one_line_or_changes_nothing(cli, pristine, tmp_path, reader, corruption):
    ws = fresh_workspace(pristine, tmp_path)
    path = corrupt(ws, reader, corruption)
    result = cli(*reader.argv(ws))
    assert_promise(result, f"{reader.name}, {corruption.name}")
    if result.code == 0:  # the file still said what it said: the same numbers as the intact file
        expected = sweep_table(pristine / "run")[COMPARED]
        assert sweep_table(ws / "out")[COMPARED].equals(expected), (reader.name, corruption.name)
    else:
        assert path.name in result.err, result.err
        assert reader.fix in result.err, result.err
