"""How many threads cmcr's work uses, chosen on purpose rather than left to each library.

torch's OpenMP pool has one thread per core and its threads spin while they wait. When another
job holds a core, every parallel region then waits for a thread the kernel has descheduled:
with one competing process on 2 cores the demo's connection stage took 3.3x longer (up to 30x in
some runs), while one thread took the same time busy or quiet (``bench/bench_contention.py``).
Making OpenMP threads sleep instead (``OMP_WAIT_POLICY=PASSIVE``) removed the slowdown but made
the quiet run 2.5x slower, so cmcr does not do that. Instead, at start, the command line

- counts the cores this process may use (its CPU affinity, capped by a cgroup CPU quota),
- leaves out those that other processes keep busy right now (50 ms of ``/proc/stat``),
- and uses that many intra-op threads, unless ``--threads N`` or ``OMP_NUM_THREADS`` says.

Data-loader workers run one torch thread each (torch sets that in every worker). Trained weights
do not depend on the thread count (tests/test_threads.py). Nothing here imports torch at module
level.

The library applies the same policy (``apply_thread_policy``): the first call of
``cmcr.Index.open``, ``cmcr.load_space``, ``cmcr.connect`` or ``JointEmbedder`` in a process
chooses the threads as above, unless the caller chose first: ``OMP_NUM_THREADS`` or
``MKL_NUM_THREADS`` set, ``configure_threads(n)`` called, or ``torch.set_num_threads(n)`` called
with an n other than torch's own default (the physical cores torch counts; a count equal to it
cannot be told apart from no choice: use ``configure_threads(n)`` then). After that first choice
cmcr never changes the count again, so a later ``torch.set_num_threads`` stands.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from cmcr.errors import ConfigError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """Cores this process may run on: its affinity, capped by a cgroup quota (at least 1)."""
    cores = len(allowed_cpus())
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def _cpu_times(stat: Path) -> dict[int, tuple[int, int]]:
    """CPU number -> (idle + iowait ticks, all ticks), from /proc/stat."""
    times = {}
    for line in stat.read_text().splitlines():
        fields = line.split()
        if fields and fields[0].startswith("cpu") and fields[0][3:].isdigit():
            ticks = [int(value) for value in fields[1:8]]
            times[int(fields[0][3:])] = (ticks[3] + ticks[4], sum(ticks))
    return times


def busy_cores(interval: float = 0.05, stat: Path = Path("/proc/stat")) -> int:
    """How many of this process's CPUs other work kept busy over ``interval`` s (0 if unknown)."""
    try:
        before = _cpu_times(stat)
        time.sleep(interval)
        after = _cpu_times(stat)
    except (OSError, ValueError, IndexError):
        return 0
    load = 0.0
    for cpu in allowed_cpus() & set(before) & set(after):
        idle = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
        load += 1.0 - idle / total if total > 0 else 0.0
    return int(round(load))


def cores_note() -> str:
    """'2 threads, 2 cores, 1 busy with other work': what a long stage is about to run on."""
    import torch

    threads, cores, busy = torch.get_num_threads(), usable_cores(), busy_cores()
    note = f"{threads} thread{'s' * (threads != 1)}, {cores} usable core{'s' * (cores != 1)}"
    if busy:
        note += f", {busy} busy with other work right now: expect it to take longer"
    return note


def requested_threads(threads: int | None) -> int:
    """``threads`` if given, else ``OMP_NUM_THREADS`` if the user set it, else the usable cores
    that no other process keeps busy now (at least 1)."""
    if threads is None:
        from_environment = os.environ.get("OMP_NUM_THREADS", "")
        threads = (int(from_environment) if from_environment.isdigit()
                   else max(1, usable_cores() - busy_cores()))
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    return threads


def configure_threads(threads: int | None = None) -> int:
    """Choose the thread count for this process (see the module docstring); returns it.

    Sets the environment that OpenMP and BLAS read at start-up (for child processes and
    libraries loaded later) and resizes torch's and FAISS's pools when they are loaded.
    """
    global _chosen
    count = requested_threads(threads)
    for variable in THREAD_VARIABLES:  # for processes this one starts, and libraries loaded later
        os.environ[variable] = str(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    _chosen = count
    _size_faiss_pool(again=True)
    return count


# -- the library's policy ----------------------------------------------------------------------
_chosen: int | None = None  # the count cmcr chose in this process; None: not yet (or the caller's)
_caller_chose = False  # the caller had chosen before cmcr's first choice: cmcr leaves it alone
_faiss_sized = False


def physical_cores(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """The machine's physical cores, counted as torch counts them (all of the machine's, not
    only those this process may use): distinct (physical id, core id) pairs, else CPUs."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return os.cpu_count() or 1
    pairs, package = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            package = value.strip()
        elif key.strip() == "core id":
            pairs.add((package, value.strip()))
    return len(pairs) or os.cpu_count() or 1


def torch_default_threads() -> int:
    """The intra-op threads torch starts with: MKL_NUM_THREADS or OMP_NUM_THREADS, else the
    physical cores."""
    for variable in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(variable, "").isdigit() and int(os.environ[variable]) > 0:
            return int(os.environ[variable])
    return physical_cores()


def caller_chose_threads() -> bool:
    """Whether the caller has chosen torch's threads: an OpenMP/MKL variable in the environment,
    or a torch thread count other than torch's default."""
    import torch

    if any(os.environ.get(variable, "").isdigit() for variable in THREAD_VARIABLES[:2]):
        return True
    return torch.get_num_threads() != torch_default_threads()


def apply_thread_policy() -> int:
    """The library's entry points call this: the first time in a process, cmcr's thread choice
    (:func:`configure_threads`) unless the caller chose first; afterwards, only FAISS's pool is
    sized to cmcr's choice once FAISS is loaded. Returns torch's thread count."""
    global _caller_chose
    import torch

    if _chosen is None and not _caller_chose:
        if caller_chose_threads():
            _caller_chose = True
        else:
            configure_threads()
    _size_faiss_pool()
    return torch.get_num_threads()


def _size_faiss_pool(again: bool = False) -> None:
    """Give FAISS (once loaded) the count cmcr chose; never when the caller chose."""
    global _faiss_sized
    if _chosen is not None and (again or not _faiss_sized) and "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(_chosen)
        _faiss_sized = True
