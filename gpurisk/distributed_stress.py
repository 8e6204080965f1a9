"""Stress on Dask (``stress_distributed``): the scenarios spread over a cluster, the tables
those of one machine.

ADL execution walks whole opposite-side queues and a cascade moves every mark, so a scenario
needs the whole book: scenarios are split into contiguous blocks of scenario ids, one block
per task (by default one per worker thread), each worker holds the whole book once (scattered
to every worker, or read from the book directory and cached per worker process), runs the
ordinary :func:`gpurisk.stress.stress` on its block, and the driver concatenates the blocks in
scenario order. Scenarios do not interact, so the tables are those of one machine, row for
row. Connecting, submitting and failures: gpurisk/distributed_cluster.py.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .book import Book, BookError, read_book, read_table
from .distributed_cluster import (DistributedRunError, _Failed, _gather, _n_workers, _raise_failed, _submit,
                                  _task_backend)
from .shards import is_sharded, read_sharded_book
from .venue import Venue, get_venue


# ------------------------------------------------------------------ workers' side

_WORKER_BOOKS: dict = {}  # per worker process: a whole book read from a directory, reused


def _load_whole_book(path: str) -> Book:
    root = Path(path)
    files = sorted(str(f) for f in root.rglob("*") if f.is_file())
    key = (str(root.resolve()), tuple((f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files))
    if key not in _WORKER_BOOKS:
        _WORKER_BOOKS.clear()
        _WORKER_BOOKS[key] = read_sharded_book(root) if is_sharded(root) else read_book(root)
    return _WORKER_BOOKS[key]


def _stress_block(source, scenarios, options: dict, hook, label: str):
    from .stress import stress

    if hook is not None:
        hook(label)
    try:
        book = _load_whole_book(source) if isinstance(source, str) else source
        options = dict(options, backend=_task_backend(options["backend"]))
        # One run at a time per task: Dask's worker threads are the parallelism here.
        return stress(book, scenarios, progress=False, threads=1, **options)
    except BookError as exc:
        return _Failed(exc.problems)


# ------------------------------------------------------------------ driver's side


def _book_symbols(book) -> SimpleNamespace:
    """What scenario parsing needs of a book: its symbols (sorted, as Book orders them)."""
    if isinstance(book, Book):
        return SimpleNamespace(symbols=book.symbols, n_symbols=book.n_symbols)
    markets = read_table(Path(book), "markets")
    symbols = tuple(sorted(markets["symbol"].drop_nulls().to_list()))
    return SimpleNamespace(symbols=symbols, n_symbols=len(symbols))


def _scenario_blocks(book, scenarios, n_blocks: int):
    """Split the scenario frame into ``n_blocks`` frames of contiguous scenario ids. A block
    whose scenarios are shorter than the longest path gets its last step stated explicitly,
    so every block has as many steps as the whole run (the same shocks, bit for bit)."""
    import polars as pl

    from .stress import scenario_paths

    df = scenarios if isinstance(scenarios, pl.DataFrame) else pl.DataFrame(scenarios)
    ids, shocks = scenario_paths(book, df)  # validates, as a single-machine run would
    n_steps = shocks.shape[1]
    blocks = []
    for sel in np.array_split(np.arange(len(ids)), max(1, min(n_blocks, len(ids)))):
        if sel.size == 0:
            continue
        block_ids = pl.Series("scenario", ids[sel]).cast(df.schema["scenario"])
        sub = df.filter(pl.col("scenario").is_in(block_ids.implode()))
        if n_steps > 1 and int(sub["step"].max()) < n_steps - 1:
            last = pl.DataFrame({
                "scenario": np.repeat(ids[sel], book.n_symbols),
                "symbol": list(book.symbols) * sel.size,
                "shock": shocks[sel, n_steps - 1, :].ravel(),
                "step": np.full(sel.size * book.n_symbols, n_steps - 1),
            }).with_columns(pl.col("scenario").cast(df.schema["scenario"]), pl.col("step").cast(df.schema["step"]),
                            pl.col("symbol").cast(df.schema["symbol"]), pl.col("shock").cast(df.schema["shock"]))
            sub = pl.concat([sub, last], how="diagonal")
        blocks.append(sub)
    return blocks


def _concat(frames):
    import polars as pl

    full = [f for f in frames if f.height]
    if not full:
        return frames[0]
    return pl.concat(full, how="vertical") if len(full) > 1 else full[0]


def stress_distributed(book, scenarios, client, venue: "str | Venue" = "binance", backend: str = "auto",
                       insurance_fund: float = 0.0, policy="queue", steps: int = 1, impact=None, ladder=None,
                       batch: int = 64, n_tasks: int | None = None, timeout: float | None = None,
                       _fault_hook=None):
    """:func:`gpurisk.stress.stress` with the scenarios spread over a Dask cluster: each task
    runs a contiguous block of scenario ids on the whole book; the tables are concatenated in
    scenario order and equal a single-machine run's, row for row.

    book: a Book (scattered once to every worker) or a book directory, plain or sharded
        (read by each worker process once; the path must be visible to the workers).
    n_tasks: blocks of scenarios (default one per worker thread).
    """
    from .stress import StressResult

    if not isinstance(backend, str):
        raise TypeError("backend must be given by name ('auto', 'cpu' or 'gpu') to run on workers")
    t0 = time.perf_counter()
    is_path = isinstance(book, (str, Path))
    header = _book_symbols(book)
    blocks = _scenario_blocks(header, scenarios, n_tasks or _n_workers(client))
    options = dict(venue=get_venue(venue), backend=backend, insurance_fund=insurance_fund, policy=policy,
                   steps=steps, impact=impact, ladder=ladder, batch=batch)
    if is_path:
        source = str(Path(book).resolve())
    else:
        source = client.scatter(book, broadcast=True, hash=False)
    run = uuid.uuid4().hex[:8]
    futs = [_submit(client, _stress_block, source, blk, options, _fault_hook, f"stress-{k}",
                    key=f"gpurisk-stress-{run}-{k}") for k, blk in enumerate(blocks)]
    results = _gather(client, futs, timeout, what="scenario block")
    _raise_failed(results)
    if len(results) != len(blocks):
        raise DistributedRunError(f"{len(results)} scenario blocks answered out of {len(blocks)}")
    summary = _concat([r.summary for r in results])
    expected_rows = sum(r.summary.height for r in results)
    if summary.height != expected_rows:  # pragma: no cover - defensive
        raise DistributedRunError("stress summaries do not reconcile")
    timings = {"seconds": time.perf_counter() - t0, "scenarios": sum(r.timings.get("scenarios", 0) for r in results),
               "screened_quiet": sum(r.timings.get("screened_quiet", 0) for r in results), "tasks": len(blocks)}
    return StressResult(summary=summary, liquidations=_concat([r.liquidations for r in results]),
                        adl_fills=_concat([r.adl_fills for r in results]),
                        haircuts=_concat([r.haircuts for r in results]),
                        prices=_concat([r.prices for r in results]), timings=timings,
                        assets=results[0].assets)  # several: every table has its asset column

