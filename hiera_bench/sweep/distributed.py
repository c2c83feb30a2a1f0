"""One sweep across the ranks of a torchrun job: which rank this is, its device, and what the ranks agree on.

torchrun (and SLURM running torchrun) sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; a sweep started under it joins the job with no flag of its own. On GPUs
each rank takes ``cuda:LOCAL_RANK`` and the job's process group is NCCL; on the CPU it is gloo, and each rank
takes its share of the node's cores. Image records never travel between ranks: each rank commits its own
into the run folder, which every rank must therefore see (checked at the start). What the ranks do exchange
is small: setup errors, the plan (from rank 0), per-rank reports and the result (Python objects over gloo),
and progress counts and a failed rank's last words (the job's TCP store, which rank 0 polls, so it stays
responsive to signals and shows the job's rate).

Without ``WORLD_SIZE``/``RANK`` a :class:`Cluster` is one process and every method is the identity or does
nothing: the sweep has one code path.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from ..errors import OS_ADVICE, UserError, is_os_error, os_advice, os_error_text
from ..interrupts import resume_hint
from ..io import atomic_write_text
from .config import Progress

T = TypeVar("T")

#: How long ranks wait for each other (a rank still loading, rank 0 waiting on another run's cell lock) and
#: how long rank 0 waits for any progress before calling the job stuck: the process-group default.
TIMEOUT = timedelta(minutes=30)
#: How long a rank looks for rank 0's probe file in --out before calling the folder unshared.
SHARED_GRACE_S = 5.0
#: How often a rank sends its progress to the store and looks for another rank's failure.
TICK_S = 0.5
#: Kinds of a rank's failure: its one line says what to fix (rank 0 shows it as it is), or it crashed.
FIXABLE, CRASHED = "fixable", "crashed"


class ReportedByRankZero(UserError):
    """This rank stops; rank 0 prints the one line that says why (the CLI prints nothing for it)."""

    quiet = True

    def __init__(self) -> None:
        super().__init__("stopped; rank 0 reports why")


class LostContact(RuntimeError):
    """A collective failed: another rank is gone."""


def job_rank() -> int | None:
    """This process's ``RANK`` in a torchrun job (None outside one: a job sets ``WORLD_SIZE`` too)."""
    return _whole(os.environ, "RANK") if "RANK" in os.environ and "WORLD_SIZE" in os.environ else None


def _whole(env: Any, name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name}={value!r} is not a whole number; launch with torchrun, which sets it") from None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _wants_cuda(device_option: str) -> bool:
    return (device_option == "auto" or device_option.startswith("cuda")) and torch.cuda.is_available()


@dataclass
class Cluster:
    """This process's place in the job (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # None: one process, no process group
    store: Any = None  # the job's store, under a prefix of hiera-bench's own
    control: Any = None  # the gloo group for Python objects (None: the default group, itself gloo)
    device: torch.device | None = None
    host: str = field(default_factory=socket.gethostname)
    shown: "JobProgress | None" = None  # the progress this rank reports through

    @property
    def primary(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def cores(self) -> int:
        """Host cores for this rank: the node's, shared evenly by the ranks on it."""
        return max(1, usable_cores() // self.local_world_size)

    # -- joining and leaving ------------------------------------------------------------------------

    @classmethod
    def join(cls, device_option: str = "auto") -> "Cluster":
        """Join the torchrun job this process belongs to, if any (NCCL when its ranks will use GPUs, else gloo)."""
        env = os.environ
        if "WORLD_SIZE" not in env or "RANK" not in env:
            return cls()
        import torch.distributed as dist

        if not dist.is_available():
            raise UserError("WORLD_SIZE and RANK are set (a torchrun job) but this torch build has no "
                            "torch.distributed; run hiera-bench without torchrun or install a full torch")
        rank, world = job_rank(), _whole(env, "WORLD_SIZE")
        local_rank = _whole(env, "LOCAL_RANK", rank)
        local_world = _whole(env, "LOCAL_WORLD_SIZE", world)
        if world < 1 or not 0 <= rank < world or not 0 <= local_rank < local_world:
            raise UserError(f"RANK={rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={world}, LOCAL_WORLD_SIZE={local_world}: "
                            "a rank must be 0 to the world size - 1; launch with torchrun, which sets them all")
        backend = "nccl" if _wants_cuda(device_option) else "gloo"
        if backend == "nccl":
            if local_rank >= torch.cuda.device_count():
                raise UserError(f"rank {rank} is local rank {local_rank} but {socket.gethostname()} has "
                                f"{torch.cuda.device_count()} GPU(s); start at most that many ranks per node "
                                "(--nproc-per-node)")
            torch.cuda.set_device(local_rank)  # NCCL, events and .to("cuda") all use the current device
        cluster = cls(rank, world, local_rank, local_world, backend)
        if dist.is_initialized():  # an earlier sweep of this command, or a program that joined the job itself
            cluster.backend = str(dist.get_backend())
            store = dist.distributed_c10d._get_default_store()
        else:
            for var in ("MASTER_ADDR", "MASTER_PORT"):
                if not env.get(var):
                    raise UserError(f"WORLD_SIZE and RANK are set but {var} is not; launch with torchrun, "
                                    "which sets them all")
            # the store env:// would make, kept: progress and failures go through it (see the module doc)
            try:
                store, _, _ = next(dist.rendezvous("env://", timeout=TIMEOUT))
                store.set_timeout(TIMEOUT)
                dist.init_process_group(backend, store=dist.PrefixStore("default_pg", store), rank=rank,
                                        world_size=world, timeout=TIMEOUT)
            except (RuntimeError, ValueError) as exc:  # no connection, or MASTER_PORT not a port: nothing has run yet
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise UserError(f"rank {rank} could not join the torchrun job ({first}); check that every node "
                                f"reaches {env['MASTER_ADDR']}:{env['MASTER_PORT']} and re-run") from exc
            # the group is the job's for the rest of this process: a command that sweeps several checkpoints or
            # data sets runs its sweeps in it (a group made again under the same store reads the old one's
            # addresses there and hangs or fails to connect)
            atexit.register(_leave_job)
        if cluster.backend == "nccl":  # NCCL connects lazily: prove it works before any image is evaluated
            cluster.device = torch.device("cuda", local_rank)
            cluster.sum_on_devices(0)
        # NCCL moves tensors between GPUs; the plan and reports are Python objects, best kept on the host
        cluster.control = dist.new_group(backend="gloo", timeout=TIMEOUT) if cluster.backend == "nccl" else None
        if cluster.control is not None:
            _joined["control"] = cluster.control
        # counters of this sweep only: the store outlives it when a program runs several sweeps in one job
        try:
            run = cluster.broadcast(secrets.token_hex(8) if cluster.primary else None)
        except LostContact as exc:  # nothing has run yet: there is nothing to keep or resume
            raise UserError(f"rank {rank} lost the torchrun job while joining it (another rank stopped: {exc}); "
                            "re-run the job") from exc
        cluster.store = dist.PrefixStore(f"hiera-bench/{run}", store)
        return cluster

    def place(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` for a GPU, and on the CPU its share of the node's cores."""
        if not self.distributed:
            return device
        if device.type == "cuda":
            if device.index is not None and self.world_size > 1:
                raise UserError(f"--device {device}: under torchrun each rank takes cuda:LOCAL_RANK; use "
                                "--device cuda or auto (CUDA_VISIBLE_DEVICES picks the GPUs)")
            device = torch.device("cuda", self.local_rank)
        elif device.type == "cpu":
            # torchrun sets OMP_NUM_THREADS=1 for every rank; a rank may use its share of the node instead
            torch.set_num_threads(self.cores)
        self.device = device
        return device

    # -- collectives (Python objects over gloo) --------------------------------------------------------

    def _collective(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except RuntimeError as exc:  # gloo/NCCL errors, store errors: a rank is gone or unreachable
            raise LostContact(str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__) from exc

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        self._collective(lambda: dist.all_gather_object(out, obj, group=self.control))
        return out

    def broadcast(self, obj: T | None) -> T:
        """Rank 0's ``obj`` on every rank (the others pass None)."""
        if not self.distributed:
            return obj  # type: ignore[return-value]
        import torch.distributed as dist

        box = [obj]
        self._collective(lambda: dist.broadcast_object_list(box, src=0, group=self.control))
        return box[0]

    def sum_on_devices(self, n: int) -> int:
        """``n`` summed over the ranks by the job's own backend (NCCL on GPUs): the job's only tensor collectives
        (a check that NCCL works at the start, and that the ranks evaluated all that was planned at the end)."""
        if not self.distributed:
            return n
        import torch.distributed as dist

        on = self.device if self.backend == "nccl" and self.device is not None else torch.device("cpu")
        total = torch.tensor([n], dtype=torch.int64, device=on)
        self._collective(lambda: dist.all_reduce(total))
        return int(total.item())

    def agree(self, fn: Callable[[], T]) -> T:
        """``fn()`` on every rank; if it raised a :class:`UserError` on any, rank 0 raises the one line (naming
        the rank unless every rank failed alike) and the others stop quietly."""
        if not self.distributed:
            return fn()
        value, error = None, None
        try:
            value = fn()
        except UserError as exc:
            error = str(exc)
        errors = self.gather((error, self.host))
        failed = [(r, e, h) for r, (e, h) in enumerate(errors) if e is not None]
        if not failed:
            return value  # type: ignore[return-value]
        if not self.primary:
            raise ReportedByRankZero()
        r, message, host = failed[0]
        if len(failed) == self.world_size and len({e for _, e, _ in failed}) == 1:
            raise UserError(message)
        raise UserError(f"rank {r} on {host}: {message}")

    def check_same(self, what: dict[str, str]) -> None:
        """Every rank must plan the same cells: ``what`` names what decides them (checkpoint, data, files)."""
        if not self.distributed:
            return
        seen = self.gather((what, self.host))
        mine = seen[0][0]
        for r, (theirs, host) in enumerate(seen):
            differs = [name for name in mine if theirs.get(name) != mine[name]]
            if differs:
                if not self.primary:
                    raise ReportedByRankZero()
                raise UserError(f"rank {r} on {host} sees another {differs[0]} than rank 0 on {seen[0][1]}; every "
                                "rank must read the same checkpoint and the same data files (one shared filesystem, "
                                "or copies that keep sizes and mtimes: rsync -a, cp -p)")

    def check_shared(self, root: Path) -> None:
        """Every rank must see the run folder rank 0 writes: each commits its own records there, and rank 0
        builds the rows from all of them."""
        if not self.distributed:
            return
        token = secrets.token_hex(8) if self.primary else None
        if self.primary:
            atomic_write_text(root / f".rank-probe-{token}", token)  # type: ignore[arg-type]
        token = self.broadcast(token)
        probe = root / f".rank-probe-{token}"
        sees = _sees(probe, token)
        seen = self.gather((sees, self.host))
        if self.primary:
            probe.unlink(missing_ok=True)
        blind = [(r, h) for r, (ok, h) in enumerate(seen) if not ok]
        if blind:
            if not self.primary:
                raise ReportedByRankZero()
            r, host = blind[0]
            raise UserError(f"--out {root} is not shared: rank {r} on {host} does not see the files rank 0 writes "
                            f"there ({len(blind)} rank(s) in all); every rank commits its images into --out, so put it "
                            "on a filesystem every node mounts at the same path (NFS, Lustre, GPFS, ...)")

    # -- progress and failures (the job's store) ------------------------------------------------------

    def count(self, n: int) -> int:
        """Add ``n`` (image, forward) pairs done here; returns the job's total so far."""
        return self._collective(lambda: self.store.add("done", n))

    def post_failure(self, message: str, kind: str = CRASHED) -> None:
        """Tell the other ranks why this one stops (the first rank to fail is the one rank 0 names); ``kind``:
        :data:`FIXABLE` (the message says what to do) or :data:`CRASHED`."""
        try:
            nth = self.store.add("failures", 1)
            self.store.set(f"failure/{nth}", f"{self.rank}\t{self.host}\t{kind}\t{message}")
        except RuntimeError:
            pass  # the store is gone with the job: nobody is left to tell

    def failure(self, wait_s: float = 0.0) -> tuple[int, str, str, str] | None:
        """The first failure a rank posted (rank, host, kind, message), waiting up to ``wait_s`` for one."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if self.store.check(["failure/1"]):
                    rank, host, kind, message = self.store.get("failure/1").decode().split("\t", 3)
                    return int(rank), host, kind, message
            except RuntimeError:
                return None
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def raise_if_failed(self) -> None:
        """Stop here if another rank failed: rank 0 with the line naming it, the others quietly."""
        failed = self.failure()
        if failed is None or failed[0] == self.rank:
            return
        if not self.primary:
            raise ReportedByRankZero()
        raise _rank_failed(*failed)

    def wait_for_ranks(self) -> None:
        """Return once every rank finished its share (rank 0 keeps its bar moving meanwhile).

        A poll of the store rather than a blocking barrier: a waiting rank still sees a failure posted by
        another and still takes Ctrl-C/SIGTERM (a signal waits for a blocking collective to return)."""
        if not self.distributed:
            return
        tick = self.shown.tick if self.shown is not None else (lambda: None)
        tick()
        finished = self._collective(lambda: self.store.add("finished", 1))
        last, since = -1, time.monotonic()
        while finished < self.world_size:
            tick()
            self.raise_if_failed()
            done = self.count(0)
            if done != last:
                last, since = done, time.monotonic()
            elif time.monotonic() - since > TIMEOUT.total_seconds():
                raise UserError(f"no rank made progress for {TIMEOUT.total_seconds() / 60:.0f} min while "
                                f"{self.world_size - finished} rank(s) had not finished; committed images are kept: "
                                f"{resume_hint()}")
            time.sleep(TICK_S / 2)
            finished = self._collective(lambda: self.store.add("finished", 0))
        tick()

    def explain(self, exc: BaseException) -> BaseException | None:
        """What to raise instead of ``exc`` in a job (None: ``exc`` itself): rank 0 says in one line why the
        job stopped, the other ranks stop quietly (a bug keeps its traceback on the rank it happened on)."""
        if not self.distributed:
            return None
        _stopped["error"] = True
        if isinstance(exc, ReportedByRankZero):
            return None
        fixable_os = is_os_error(exc) and exc.errno in OS_ADVICE  # a full disk, a permission: what helps, in one line
        if isinstance(exc, Exception) and not isinstance(exc, LostContact):
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            if isinstance(exc, UserError):
                self.post_failure(first, FIXABLE)
            elif fixable_os:
                self.post_failure(f"{os_error_text(exc)} ({os_advice(exc)}, then {resume_hint()})", FIXABLE)
            else:
                self.post_failure(f"{type(exc).__name__}: {first}")
        stopped = isinstance(exc, (KeyboardInterrupt, LostContact))
        if not self.primary:
            return ReportedByRankZero() if stopped or isinstance(exc, UserError) or fixable_os else None
        if not stopped:
            return None  # rank 0's own error: printed as it is
        failed = self.failure(wait_s=2.0)  # a rank that failed posts why before it exits and torchrun stops us
        if failed is not None and failed[0] != self.rank:
            return _rank_failed(*failed)
        if isinstance(exc, LostContact):
            return UserError(f"lost contact with the job: another rank or its torchrun agent is gone ({exc}); finished "
                             f"cells and committed images are kept: {resume_hint()}")
        return UserError("the job was stopped: a rank died or the job was cancelled (torchrun's log names the rank); "
                         f"finished cells and committed images are kept: {resume_hint()}")

    def progress(self, inner: Progress) -> Progress:
        """``inner`` for one process; in a job, the job's progress on rank 0 and none on the others."""
        if not self.distributed:
            return inner
        self.shown = JobProgress(inner, self)
        return self.shown


#: Whether a sweep of this process stopped on an error (set by :meth:`Cluster.explain`).
_stopped = {"error": False}
#: The gloo group an NCCL job made for Python objects (kept for the process, as the default group is).
_joined: dict[str, Any] = {}


def _leave_job() -> None:
    """At exit: end the process group this process made (torch warns of one left open, and a gloo group's threads
    still running as the interpreter ends abort it: SIGABRT, which torchrun then names as the job's failure). After
    an error an NCCL group is left as it is: ending it while another rank is gone can wait for that rank."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if not _stopped["error"] or dist.get_backend() == "gloo":
        dist.destroy_process_group()
    elif _joined.get("control") is not None:  # an NCCL job's gloo group for Python objects: ended alike
        try:
            dist.destroy_process_group(_joined["control"])
        except (RuntimeError, ValueError):  # already gone with the job: nothing left to end
            pass


def _rank_failed(rank: int, host: str, kind: str, message: str) -> UserError:
    if kind == FIXABLE:  # the rank's own one line says what to do
        return UserError(f"rank {rank} on {host}: {message}")
    return UserError(f"rank {rank} on {host} failed: {message}; finished cells and committed images are kept: "
                     f"{resume_hint()}")


def _sees(probe: Path, token: str | None, grace_s: float = SHARED_GRACE_S) -> bool:
    """Whether ``probe`` holds ``token`` here, allowing a network filesystem a moment to show it."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            if probe.read_text() == token:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


class JobProgress:
    """A :class:`Progress` for one rank of a job: every rank adds what it did to a counter in the job's store
    (every :data:`TICK_S`), and rank 0's bar shows the counter, so its rate and ETA are the job's. Messages
    show on rank 0 only (every rank would print the same)."""

    def __init__(self, inner: Progress, cluster: Cluster) -> None:
        self.inner, self.cluster = inner, cluster
        self.unsent, self.shown, self.started = 0, 0, False
        self.last_tick = time.monotonic()

    def start(self, total: int, description: str) -> None:
        if self.cluster.primary and not self.started:
            self.inner.start(total, f"{description} on {self.cluster.world_size} ranks")
            self.started = True

    def advance(self, n: int) -> None:
        self.unsent += n
        if time.monotonic() - self.last_tick >= TICK_S:
            self.tick()

    def tick(self) -> None:
        """Send this rank's count, show the job's, and stop if another rank failed."""
        self.last_tick = time.monotonic()
        done = self.cluster.count(self.unsent)
        self.unsent = 0
        if self.started:
            self.inner.advance(done - self.shown)
            self.shown = done
        self.cluster.raise_if_failed()

    def log(self, message: str) -> None:
        if self.cluster.primary:
            self.inner.log(message)
