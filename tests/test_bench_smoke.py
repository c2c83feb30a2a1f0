"""Smoke tests of benchmarks/bench_sweep.py's helpers and the engine's OOM back-off (nothing is timed)."""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from hiera_bench.testing import make_image

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sweep.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_sweep", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sweep"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list[Path]:
    """Four JPEGs of different sizes and aspect ratios (real files, decoded by PIL)."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(120, 90), (75, 101), (64, 64), (133, 70)]):
        path = root / f"img{i}.JPEG"
        make_image(rng, size, i).save(path, quality=90)
        paths.append(path)
    return paths


def test_speedup_and_estimate(bench):
    assert bench.speedup(10.0, 4.0) == 2.5
    assert math.isnan(bench.speedup(1.0, 0.0))
    # setup plus the loop scaled to 50k images; a loop faster than the data pipeline alone is capped by it
    assert bench.full_run_estimate(5.0, 2.0, 1000) == 5.0 + 100.0
    assert bench.full_run_estimate(5.0, 1.0, 1000, data_s=3.0) == 5.0 + 150.0


def test_grid_sizes_round_to_stride(bench):
    assert bench.grid_sizes(224, 32, (0.57, 0.71, 0.86, 1.0)) == [128, 160, 192, 224]
    assert bench.grid_sizes(256, 32, (0.75, 1.0, 1.25, 1.5)) == [192, 256, 320, 384]


def test_multi_size_pipeline_is_bit_identical_to_timm(bench, jpegs):
    from hiera_bench.preprocess import EvalPreprocess, MultiSizeTransform

    pre = EvalPreprocess(crop_pct=0.875, interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    sizes = [32, 48, 64, 96]
    ref = bench.naive_batch(jpegs, {s: pre.timm_transform(s) for s in sizes})
    got = bench.multi_size_batch(jpegs, pre, MultiSizeTransform(pre, sizes))
    bench.assert_bit_identical(ref, got)
    got[48] = got[48].clone()
    got[48][2, 1, 5, 5] = torch.nextafter(got[48][2, 1, 5, 5], torch.tensor(10.0))  # one ulp in one pixel
    with pytest.raises(AssertionError, match="48 px"):
        bench.assert_bit_identical(ref, got)


def test_preprocess_report_has_ratio(bench, jpegs):
    from hiera_bench.preprocess import EvalPreprocess

    pre = EvalPreprocess(crop_pct=0.9, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = bench.bench_preprocess(jpegs, pre, [32, 64], batch=3)
    assert out["n_images"] == 4 and out["bit_identical"] is True
    # timings of 4 tiny images are rounded to ms: only check the ratio is a real, positive figure
    assert out["speedup"] > 0 and out["naive_ms_per_image"] > 0 and out["multi_ms_per_image"] > 0


def test_top1_agreement(bench):
    a = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    b = torch.tensor([1, 0, 0, 0])
    assert bench.top1_agreement(a, b) == 0.75
    assert bench.top1_agreement(a, a) == 1.0


def test_compare_cells_flags_differences(bench):
    ours = {"interp@64": {"top1": 50.0, "nll": 1.0}}
    assert bench.compare_cells(ours, {"interp@64": {"top1": 50.0, "nll": 1.0}})["same"]
    assert not bench.compare_cells(ours, {"interp@64": {"top1": 25.0, "nll": 1.0}})["same"]
    with pytest.raises(AssertionError):
        bench.compare_cells(ours, {"abswin@64": {"top1": 50.0, "nll": 1.0}})


def test_stage_class_folder_from_index(bench, jpegs, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in jpegs:
        (flat / p.name).write_bytes(p.read_bytes())
    (flat / "INDEX.csv").write_text("file,wnid,label\n" + "".join(f"{p.name},n0144076{i % 2},{i}\n" for i, p in enumerate(jpegs)))
    pairs = bench.read_index(flat)
    root = bench.stage_class_folder(pairs, tmp_path / "val")
    assert sorted(p.name for p in root.iterdir()) == ["n01440760", "n01440761"]
    assert len(list(root.glob("*/*.JPEG"))) == 4
    assert bench.read_index(root) and len(bench.read_index(root)) == 4


def test_checks_and_markdown(bench):
    report = {"mode": "quick", "device": "cpu", "n_images": 4, "images": "x", "batch_size": 2, "amp": "none",
              "torch": "t", "timm": "t", "cpu_count": 2, "started": "now", "total_s": 1.0, "skipped": [],
              "matmul_peak_tflops": {"fp32": 1.0}, "preprocess": {"n_images": 4, "sizes": [32], "naive_s": 3.0,
              "multi_s": 1.0, "naive_ms_per_image": 1, "multi_ms_per_image": 1, "speedup": 3.0, "bit_identical": True},
              "models": {"m": {"sizes": [32], "naive_over_sweep": 1.0, "sweep_over_floor": 1.05,
                               "flops_share_of_peak": 0.6}}}
    report["checks"] = bench.checks(report)
    assert report["checks"]["preprocess_speedup"]["met"]
    assert not report["checks"]["m: naive/sweep"]["met"]
    assert report["checks"]["m: sweep/floor"]["met"]
    assert "| m: naive/sweep | 1.0 | >= 1.1 | no |" in bench.markdown(report)


def test_forward_with_backoff_halves_on_cuda_oom():
    from hiera_bench.sweep.runtime import forward_with_backoff

    calls = []

    def net(x):  # a real torch.cuda.OutOfMemoryError above 3 images, as a GPU with little memory would raise
        calls.append(x.shape[0])
        if x.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return x.sum(dim=(2, 3))

    x = torch.arange(10 * 3 * 2 * 2, dtype=torch.float32).view(10, 3, 2, 2)
    logs, chunk = [], [8]
    out = forward_with_backoff(net, x, chunk, logs.append)
    assert torch.equal(out, x.sum(dim=(2, 3)))
    assert chunk == [2] and len(logs) == 2 and "retrying with batches of 2" in logs[-1]
    calls.clear()
    forward_with_backoff(net, x[:5], chunk, logs.append)  # the smaller size sticks
    assert calls == [2, 2, 1]


def test_forward_with_backoff_gives_up_at_one_image():
    from hiera_bench.sweep.runtime import forward_with_backoff

    def net(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        forward_with_backoff(net, torch.zeros(4, 3, 2, 2), [4], lambda m: None)


def test_records_table_keeps_failed_rows_null():
    from hiera_bench.data.loader import Batch
    from hiera_bench.sweep.records import records_table as _records_table

    ok = torch.tensor([True, False, True])
    batch = Batch(torch.tensor([5, 6, 7]), ["a", "b", "c"], torch.tensor([1, 2, 3]), ok, ["", "bad", ""], {})
    rec = {"topk": np.array([[1, 2], [3, 4]], dtype=np.int32), "correct1": np.array([True, False]),
           "correct5": np.array([True, True]), "nll": np.array([0.5, 1.5], dtype=np.float32),
           "confidence": np.array([0.9, 0.1], dtype=np.float32)}
    table = _records_table(batch, rec, 1)
    assert table.column("topk").to_pylist() == [None, [3, 4]]
    assert table.column("nll").to_pylist() == [None, 1.5]
    assert table.column("failed").to_pylist() == [True, False]
    assert _records_table(batch, None, 0).column("correct1").null_count == 3
    assert isinstance(table.column("topk").type, pa.ListType)


def test_cpu_forwards_are_sliced_so_the_widest_activation_stays_under_32_mib():
    """The real timm configs (built on the meta device): stage 1's MLP hidden layer, fp32, per image."""
    import timm

    from hiera_bench.geometry import HieraGeometry
    from hiera_bench.sweep.runtime import CPU_WIDEST_TENSOR_BYTES, forward_batch

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    with torch.device("meta"):
        tiny = HieraGeometry.from_model(timm.create_model("hiera_tiny_224"))
        base_plus = HieraGeometry.from_model(timm.create_model("hiera_base_plus_224"))
    assert CPU_WIDEST_TENSOR_BYTES == 32 * 2 ** 20
    # 56x56 tokens x 96 channels x 4 (MLP) x 4 bytes = 4.8 MB per image -> 6 images; 80x80 -> 3
    assert [forward_batch(tiny, s, 32, cpu) for s in (96, 224, 320, 1024)] == [32, 6, 3, 1]
    assert forward_batch(base_plus, 224, 32, cpu) == 5  # 112 channels
    assert forward_batch(tiny, 224, 4, cpu) == 4  # never more than the batch
    assert forward_batch(tiny, 320, 32, gpu) == 32  # accelerators take the whole batch


def test_loading_plan_decodes_on_threads_on_cpu_and_in_workers_beside_an_accelerator():
    from hiera_bench.sweep.runtime import default_workers, loading_plan

    assert loading_plan(torch.device("cpu"), 50_000, None) == (0, max(1, torch.get_num_threads()))
    assert loading_plan(torch.device("cuda"), 50_000, None) == (default_workers(50_000), 1)
    assert loading_plan(torch.device("cpu"), 50_000, 3) == (3, 1)  # --workers is honoured
    assert loading_plan(torch.device("cuda"), 10, None) == (0, 1)  # tiny sets: no worker start-up


@pytest.fixture(scope="module")
def gpu_suite(bench):
    path = BENCH.parent / "gpu_suite.py"
    spec = importlib.util.spec_from_file_location("gpu_suite", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_suite_replicates_images_under_distinct_ids(gpu_suite, jpegs, tmp_path):
    from hiera_bench.data import open_data

    pairs = [(p, w) for p, w in zip(jpegs, ["n01751748", "n02119789", "n04596742", "n01751748"])]
    root = gpu_suite.replicate(pairs, tmp_path / "val", 10)
    files = sorted(root.glob("*/*"))
    assert len(files) == 10 and len({f.name for f in files}) == 10
    assert {f.stat().st_ino for f in files} == {p.stat().st_ino for p, _ in pairs}  # hard links, no copies
    data = open_data(str(root), ["n01751748", "n02119789", "n04596742"])
    ids = data.dataset["image_id"]
    assert len(ids) == len(set(ids)) == 10
    gpu_suite.replicate(pairs, root, 10)  # staged already: nothing changes
    assert sorted(root.glob("*/*")) == files
    named = [(Path(shutil.copy(p, tmp_path / f"ILSVRC2012_val_0000000{i}.JPEG")), w) for i, (p, w) in enumerate(pairs)]
    val = gpu_suite.replicate(named, tmp_path / "from-val", 10)  # ImageNet val's own names: still 10 images
    assert len(open_data(str(val), ["n01751748", "n02119789", "n04596742"])) == 10


def test_gpu_suite_checks_judge_only_what_was_measured(gpu_suite):
    report = {"measured_full_val": True, "sweep_compiled_warm": {"rc": 0, "wall_s": 120.0},
              "naive": {"scaled_to_full_s": 300.0}, "bound_full_s": 110.0}
    got = gpu_suite.checks(report)
    assert got["full sweep wall, compiled, warm cache (s)"]["met"] is True
    assert got["naive loop / sweep"]["value"] == 2.5 and got["naive loop / sweep"]["met"]
    assert got["sweep / max(data alone, floor)"]["value"] == pytest.approx(1.091, abs=1e-3)
    # a wall not measured on the full set never passes, however short
    assert gpu_suite.checks(dict(report, measured_full_val=False))["full sweep wall, compiled, warm cache (s)"]["met"] is False
    assert gpu_suite.checks({"sweep_compiled_warm": {"rc": 1, "wall_s": 5.0}}) == {}


def test_gpu_suite_splits_a_sweep_process_wall_around_run_sweep(gpu_suite, full_ckpt, class_folder, tmp_path):
    """Start-up (interpreter, imports) and the tail (views, plots, exit) are what run.json's own timing cannot
    see; the suite measures them from the outside, and the three parts add up to the process wall."""
    import os

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hiera_bench", "sweep", "-c", str(full_ckpt), "--data", str(class_folder),
           "--res", "64", "--device", "cpu", "-q", "--out", str(out)]
    result = gpu_suite.sweep_part(out, gpu_suite.timed_process(cmd, dict(os.environ), 300, tmp_path / "log"))
    assert result["rc"] == 0, result["tail"]
    assert 0 < result["startup_s"] < result["wall_s"] and result["after_s"] >= 0
    assert result["startup_s"] + result["run_wall_s"] + result["after_s"] == pytest.approx(result["wall_s"], abs=0.01)


def test_device_scripts_parse_and_the_session_stops_inside_one_device_call():
    """A lent GPU gives 15 minutes and one call of at most 600 s: a script that cannot parse, or a session that
    could outlive the call (its report lost), wastes the session. Checked here, where nothing costs."""
    import re
    import subprocess

    scripts = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.sh"))
    assert {s.name for s in scripts} >= {"run_device_session.sh", "run_gpu_suite.sh", "run_dist_nccl.sh"}
    for script in scripts:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (script.name, done.stderr)
    session = next(s for s in scripts if s.name == "run_device_session.sh").read_text()
    deadline = int(re.search(r"DEADLINE_S:-(\d+)", session).group(1))
    assert deadline <= 580  # the call's 600 s, less time to copy $OUT back
    first = int(re.search(r"timeout (\d+) bash benchmarks/run_dist_nccl\.sh", session).group(1))
    assert first < deadline
