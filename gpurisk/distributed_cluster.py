"""The Dask plumbing every distributed run shares (gpurisk/distributed.py revalues,
gpurisk/distributed_stress.py stresses): connecting to a cluster, submitting tasks, gathering
all of their results or none, and the error a run raises when it cannot finish.

**Failures.** Every task is pure and recomputable from its inputs. When a worker dies,
Dask reruns its tasks on the others (up to ``distributed.scheduler.allowed-failures`` times
per task); past that, or when a result cannot be recovered, the run raises
:class:`DistributedRunError`. Results are only returned when every shard has answered and
the row counts reconcile: a run never returns part of a book as if it were the whole.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

from .backend import get_backend
from .book import BookError


class DistributedRunError(RuntimeError):
    """A distributed run could not finish (workers died too often, results were lost, the
    scheduler is unreachable, or shards do not reconcile). No partial result is returned."""


def _dask():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the extra is in dev
        raise ImportError("scale-out needs Dask: pip install 'gpurisk[distributed]'") from exc
    return distributed


# ------------------------------------------------------------------ workers' side


@dataclass
class _Failed:
    """A shard's book broke rules (BookError does not survive pickling; its problems do)."""

    problems: list


def _task_backend(name: str):
    """The backend of one task. A fresh CpuBackend per task: the shared one keeps its radix
    sort buffers between calls, which two tasks running on threads of one worker would share."""
    from .backend import CpuBackend, gpu_available

    if name == "cpu" or (name == "auto" and not gpu_available()):
        return CpuBackend()
    return get_backend(name)


# ------------------------------------------------------------------ driver's side


def _gather(client, futures, timeout=None, what="shard", fetch: bool = True):
    """Wait for every future and return their results (``fetch``) or None. Any failure
    cancels the whole set and raises: a run never yields part of its results."""
    distributed = _dask()
    try:
        distributed.wait(futures, timeout=timeout)
        if fetch:
            return client.gather(futures)
        failed = [f for f in futures if f.status != "finished"]
        if failed:
            client.gather(failed)  # raises the task's error
            raise DistributedRunError(f"{len(failed)} {what} task(s) ended as {failed[0].status!r}")
        return None
    except BaseException as exc:
        client.cancel(futures)  # nothing of a failed run keeps running or holding memory
        if isinstance(exc, distributed.KilledWorker):
            raise DistributedRunError(
                f"a {what} task kept losing its worker ({exc}); workers died (out of memory? killed?) more often "
                "than distributed.scheduler.allowed-failures allows. No partial result is returned.") from exc
        if isinstance(exc, (distributed.CancelledError, *_cancelled_errors())):
            raise DistributedRunError(f"a {what} result was lost or cancelled before the run finished ({exc!r}); "
                                      "no partial result is returned") from exc
        if isinstance(exc, TimeoutError):
            raise DistributedRunError(f"{what} tasks did not finish within {timeout} s; "
                                      "no partial result is returned") from exc
        raise


def _cancelled_errors() -> tuple:
    import concurrent.futures

    import distributed.client as dc

    return tuple({concurrent.futures.CancelledError, *(getattr(dc, n) for n in ("FutureCancelledError",
                                                                                  "FuturesCancelledError")
                                                       if hasattr(dc, n))})


def _raise_failed(results):
    problems, seen = [], set()
    for r in results:
        if isinstance(r, _Failed):
            for p in r.problems:  # the same marks or scenario problem from every shard: once
                if str(p) not in seen:
                    seen.add(str(p))
                    problems.append(p)
    if problems:
        raise BookError(problems)


def _n_workers(client) -> int:
    info = client.scheduler_info()
    return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))


def _submit(client, fn, *args, key: str, **placement):
    with warnings.catch_warnings():  # shard data travel in the task itself (recomputable)
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
        warnings.filterwarnings("ignore", message=".*[Ll]arge object.*")
        return client.submit(fn, *args, key=key, pure=False, **placement)


# ------------------------------------------------------------------ clusters


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
            timeout: float | None = None):
    """A ``distributed.Client``: to a running scheduler (``tcp://host:8786``), or to a
    LocalCluster of ``workers`` processes started here (and stopped on exit). ``timeout``:
    seconds to reach the scheduler (default Dask's ``distributed.comm.timeouts.connect``)."""
    distributed = _dask()
    if scheduler:
        try:
            client = distributed.Client(scheduler, **({} if timeout is None else {"timeout": timeout}))
        except (OSError, TimeoutError) as exc:
            raise DistributedRunError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                                      "`dask scheduler` and workers with `dask worker <address>`") from exc
        with client:
            yield client
        return
    if not workers or workers < 1:
        raise ValueError("connect needs a scheduler address or workers >= 1")
    omp = str(max(1, (os.cpu_count() or 1) // workers))
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                                  dashboard_address=":0", env={"OMP_NUM_THREADS": omp}) as cluster, \
            distributed.Client(cluster) as client:
        yield client
