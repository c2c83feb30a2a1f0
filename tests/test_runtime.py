"""The sweep's runtime on a device: one net per size with each scheme's embedding swapped in, one
compiled graph per size, the batch-size choice, and the class-folder listing against datasets' own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hiera_bench.errors import UserError
from hiera_bench.testing import WNIDS, make_image


def _loaded(ckpt: Path):
    from hiera_bench.models import load_model

    return load_model(checkpoint=str(ckpt))


def _embeddings(loaded, size: int) -> list[torch.Tensor]:
    from hiera_bench.sweep.plan import plan_forwards
    from hiera_bench.posembed import parse_schemes, spec_from_model

    spec = spec_from_model(loaded.model, loaded.native_size)
    forwards = plan_forwards(spec, parse_schemes("interp,abswin"), [size], loaded.geometry)
    assert len(forwards) == 2, "the two schemes must differ away from the native size"
    return [f.embedding for f in forwards]


def test_build_at_size_owns_its_embedding(full_ckpt):
    from hiera_bench.models import build_at_size

    loaded = _loaded(full_ckpt)
    embedding = _embeddings(loaded, 96)[0]
    before = embedding.clone()
    net = build_at_size(loaded, 96, embedding)
    with torch.no_grad():
        net.pos_embed.add_(1.0)
    assert torch.equal(embedding, before)


def test_one_net_per_size_gives_each_scheme_its_own_logits(full_ckpt):
    """Swapping embeddings into one net equals a separate net per scheme, in any order."""
    from hiera_bench.sweep.runtime import SizeRunner
    from hiera_bench.models import build_at_size

    loaded = _loaded(full_ckpt)
    interp, abswin = _embeddings(loaded, 96)
    x = torch.randn(5, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = {id(e): build_at_size(loaded, 96, e)(x) for e in (interp, abswin)}
        runner = SizeRunner(96, build_at_size(loaded, 96, interp))
        runner.chunk = [5]
        for e in (abswin, interp, abswin):
            runner.use(e)
            assert torch.equal(runner(x, print), want[id(e)])
    assert not torch.allclose(want[id(interp)], want[id(abswin)])


def test_compiled_runners_compile_once_per_size_not_per_scheme(full_ckpt):
    """Two sizes x two schemes and a short last batch: two graphs (dynamo's eager backend keeps it fast;
    the guards and graph breaks are dynamo's, whatever backend lowers the graph)."""
    import torch._dynamo

    from hiera_bench.sweep.runtime import SizeRunner, compile_runners
    from hiera_bench.models import build_at_size

    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()  # the totals are per process: another test in this worker may have compiled before
    loaded = _loaded(full_ckpt)
    sizes = (96, 128)
    embeddings = {s: _embeddings(loaded, s) for s in sizes}
    runners = {s: SizeRunner(s, build_at_size(loaded, s, embeddings[s][0]), chunk=[4]) for s in sizes}
    info = compile_runners(runners, 4, torch.device("cpu"), None, torch.contiguous_format, print, backend="eager")
    assert info["graphs"] == len(sizes)
    with torch.no_grad():
        for s in sizes:
            x = torch.randn(3, 3, s, s)  # shorter than the compiled batch: padded, not recompiled
            for e in embeddings[s]:
                runners[s].use(e)
                got = runners[s](x, print)
                assert torch.allclose(got, build_at_size(loaded, s, e)(x), atol=1e-5)
    from hiera_bench.sweep.runtime import compile_counters

    assert compile_counters()["graphs"] == len(sizes)


def test_batch_size_option():
    from hiera_bench.sweep.config import parse_batch_size
    from hiera_bench.sweep.runtime import AUTO_BATCH_CPU, auto_batch_size

    assert parse_batch_size("auto") == "auto" and parse_batch_size(" AUTO ") == "auto"
    assert parse_batch_size("64") == 64 and parse_batch_size(8) == 8
    for bad in ("0", "-3", "many", "1.5"):
        with pytest.raises(UserError, match="--batch-size"):
            parse_batch_size(bad)
    # off CUDA the batch only sets decode granularity: CPU forwards are sliced under 32 MiB anyway
    assert auto_batch_size(torch.nn.Identity(), 224, torch.device("cpu"), None) == AUTO_BATCH_CPU


def test_prefetch_keeps_crops_in_flight_bounded():
    from hiera_bench.sweep.runtime import prefetch_factor

    sizes = [224, 256, 288, 320]
    per_batch = 256 * sum(3 * s * s for s in sizes)  # 231 MB
    assert prefetch_factor(15, 256, sizes, budget=16 << 30) == 4  # 15 x 4 batches: 13.9 GB
    assert prefetch_factor(15, 256, sizes, budget=16 << 30) * 15 * per_batch <= 16 << 30
    assert prefetch_factor(2, 32, sizes, budget=16 << 30) == 8  # small batches: capped
    assert prefetch_factor(64, 1024, sizes, budget=1 << 30) == 1  # never below one
    assert 1 <= prefetch_factor(15, 256, sizes) <= 8  # from this host's memory


def test_class_folder_lists_what_datasets_imagefolder_lists(tmp_path):
    """The scandir listing takes exactly the files datasets' imagefolder builder takes, below the class folders
    too (timm and torchvision read a class folder's subfolders as its images)."""
    import datasets

    from hiera_bench.data import open_data

    root = tmp_path / "val"
    rng = __import__("numpy").random.default_rng(0)
    names = {WNIDS[0]: ["a.JPEG", "b.jpg", "c.png", "notes.txt", ".hidden.JPEG"],
             WNIDS[1]: ["d.JPEG", "e.webp", "f.JPEG"], WNIDS[2]: ["g.jpeg"]}
    for wnid, files in names.items():
        (root / wnid).mkdir(parents=True)
        for i, name in enumerate(files):
            path = root / wnid / name
            if name.endswith(".txt"):
                path.write_text("not an image")
            else:
                make_image(rng, (40 + i, 30), i).save(path, format="PNG" if name.endswith(".png") else
                                                      "WEBP" if name.endswith(".webp") else "JPEG")
    (root / WNIDS[2] / "nested").mkdir()
    make_image(rng, (40, 40), 9).save(root / WNIDS[2] / "nested" / "deep.JPEG")
    reference = datasets.load_dataset("imagefolder", data_files={"validation": str(root / "*" / "**")},
                                      drop_labels=True, split="validation")
    want = sorted(Path(r["image"].filename).name for r in reference)
    got = open_data(str(root), sorted(WNIDS))
    assert sorted(Path(r["image"]["path"]).name for r in got.dataset) == want
    assert [(r["image_id"], r["label"]) for r in got.dataset][:2] == [("a", 0), ("b", 0)]


def test_compile_cache_is_persistent_unless_the_user_chose_one(monkeypatch, tmp_path):
    import os

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from hiera_bench.cache import persistent_compile_cache

    monkeypatch.setenv("HIERA_BENCH_CACHE", str(tmp_path / "hb"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    with persistent_compile_cache() as folder:
        assert folder == os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "hb" / "torchinductor")
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # the caller's own compiles keep their folder
    # importing timm makes inductor write its /tmp default into the environment: still ours to replace
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    with persistent_compile_cache() as folder:
        assert folder == str(tmp_path / "hb" / "torchinductor")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == default_cache_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    with persistent_compile_cache() as folder:
        assert folder == str(tmp_path / "mine")


def test_a_signal_inside_an_atomic_write_waits_for_the_rename(tmp_path):
    """The handler the CLI installs: a Ctrl-C that lands mid-write is raised after the file is in place."""
    import signal as sig

    from hiera_bench import interrupts
    from hiera_bench.io import atomic_write_bytes

    target = tmp_path / "out.bin"
    previous = sig.signal(sig.SIGINT, interrupts.on_signal)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                sig.raise_signal(sig.SIGINT)  # arrives "inside" a write
                atomic_write_bytes(target, b"complete")
        assert target.read_bytes() == b"complete"
        assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temp file left behind
        with pytest.raises(interrupts.Terminated):
            with interrupts.deferred():
                sig.raise_signal(sig.SIGINT)
                interrupts.on_signal(sig.SIGTERM)  # the last signal wins
        with pytest.raises(KeyboardInterrupt):
            sig.raise_signal(sig.SIGINT)  # outside a write: at once
    finally:
        sig.signal(sig.SIGINT, previous)


def test_compile_settings_hold_for_the_whole_loop_and_are_given_back(monkeypatch, tmp_path):
    """The recompile limit is raised for as long as the compiled nets run (an out-of-memory back-off recompiles a
    size mid-loop: past the default limit of 8 it ran eagerly); inductor's and Triton's cache folders and the limit
    are the caller's again after."""
    import os

    import torch._dynamo

    from hiera_bench.sweep.runtime import compile_settings

    monkeypatch.setenv("HIERA_BENCH_CACHE", str(tmp_path / "hb"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    limit = torch._dynamo.config.recompile_limit
    with compile_settings(9):
        assert torch._dynamo.config.recompile_limit >= 2 * 9 + 8
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "hb" / "torchinductor")
        os.environ["TRITON_CACHE_DIR"] = str(tmp_path / "hb" / "torchinductor" / "triton")  # as inductor sets it
    assert torch._dynamo.config.recompile_limit == limit
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ and "TRITON_CACHE_DIR" not in os.environ
