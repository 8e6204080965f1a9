"""Sharded books: a book directory whose big tables are split by whole accounts, for
scale-out on Dask (gpurisk/distributed.py).

A **sharded book** is a directory holding the small tables whole and the big ones split by
whole accounts (an account and all its positions are always in the same shard)::

    <dir>/markets.parquet, <dir>/tiers.parquet          whole, read by every shard
    <dir>/collateral.parquet                            whole, when the book has one (pooled venues)
    <dir>/shards/shard-00000/{accounts,positions}.parquet
    <dir>/shards/shard-00001/...                        contiguous account_id ranges, in shard order
    <dir>/manifest.json                                 shard names and row counts (checked on read)

``write_sharded(book, dir, n_shards)`` writes one (balanced on accounts + positions),
``read_sharded_book(dir)`` reads it back as one validated :class:`~gpurisk.book.Book`, and
``read_shard(dir, k)`` one shard of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .book import _READERS, Book, BookError, Problem, read_table

SHARDS_DIR = "shards"
MANIFEST = "manifest.json"
FORMAT = "gpurisk-sharded-book"


def shard_bounds(book: Book, n_shards: int) -> np.ndarray:
    """Account-index cut points (n_shards + 1) of ``n_shards`` contiguous, non-empty shards,
    balanced on accounts + positions. An account with wallets in several assets (several rows,
    README "Inverse contracts") stays whole in one shard: cuts fall between account ids."""
    # the first row of each account id, and the end: with one row per account, every row
    first = np.flatnonzero(np.r_[True, book.account_id[1:] != book.account_id[:-1]]) if book.n_accounts else \
        np.zeros(0, np.int64)
    edges = np.r_[first, book.n_accounts].astype(np.int64)
    n = int(first.size)
    if not 1 <= n_shards <= n:
        raise ValueError(f"n_shards must be in 1..{n} (the number of accounts), got {n_shards}")
    work = book.pos_start[edges] + edges  # account rows plus positions before each account
    targets = work[-1] * np.arange(1, n_shards) / n_shards
    cuts = np.searchsorted(work, targets, side="left").astype(np.int64)
    bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    for k in range(1, n_shards):  # every shard keeps at least one account
        bounds[k] = min(max(bounds[k], bounds[k - 1] + 1), n - (n_shards - k))
    return edges[bounds]


def slice_book(book: Book, a0: int, a1: int) -> Book:
    """Accounts ``a0:a1`` (by index) and their positions, with the whole markets and tiers."""
    p0, p1 = int(book.pos_start[a0]), int(book.pos_start[a1])
    return Book(
        symbols=book.symbols, mark_price=book.mark_price, contract_size=book.contract_size,
        tier_start=book.tier_start, tier_floor=book.tier_floor, tier_mmr=book.tier_mmr,
        tier_cum=book.tier_cum, tier_max_leverage=book.tier_max_leverage,
        account_id=book.account_id[a0:a1].copy(), wallet=book.wallet[a0:a1].copy(),
        pos_start=book.pos_start[a0:a1 + 1] - p0,
        pos_account=(book.pos_account[p0:p1] - a0).astype(np.int32),
        pos_symbol=book.pos_symbol[p0:p1].copy(), size=book.size[p0:p1].copy(),
        entry=book.entry[p0:p1].copy(), isolated=book.isolated[p0:p1].copy(),
        isolated_margin=book.isolated_margin[p0:p1].copy(), leverage=book.leverage[p0:p1].copy(),
        meta={"shard": (a0, a1)}, tick_size=book.tick_size, **book.contract_fields(),
        account_asset=book.account_asset[a0:a1].copy(),
        margin_model=None if book.margin_model is None else book.margin_model[a0:a1].copy(),
    )


def split_book(book: Book, n_shards: int) -> list[Book]:
    """The book as ``n_shards`` in-memory shards of whole accounts, in account order."""
    b = shard_bounds(book, n_shards)
    return [slice_book(book, int(b[k]), int(b[k + 1])) for k in range(n_shards)]


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def write_sharded(book: Book, directory: str | Path, n_shards: int, format: str = "parquet", inputs=()) -> Path:
    """Write ``book`` as a sharded book directory of ``n_shards`` shards (see module doc),
    atomically: a run killed midway leaves no sharded book (or the previous one), never a
    part of one; the manifest, written last, names every shard and file with its checksum."""
    from .output import atomic_dir, book_hash

    if format not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {format!r}")
    bounds = shard_bounds(book, n_shards)
    frames = book.frames()
    meta = {"book_hash": book_hash(book), "marks": dict(zip(book.symbols, book.mark_price.tolist())),
            "n_shards": n_shards, "accounts": book.n_accounts, "positions": book.n_positions}
    with atomic_dir(directory, "shard", meta, inputs) as out:
        for name in ("markets", "tiers"):
            out.write_frame(f"{name}.{format}", frames[name], format)
        if book.collateral is not None:  # whole, like markets: every pool is in one shard
            out.write_frame(f"collateral.{format}", book.collateral, format)
        shards = []
        for k in range(n_shards):
            a0, a1 = int(bounds[k]), int(bounds[k + 1])
            p0, p1 = int(book.pos_start[a0]), int(book.pos_start[a1])
            d = f"{SHARDS_DIR}/{shard_name(k)}"
            out.write_frame(f"{d}/accounts.{format}", frames["accounts"].slice(a0, a1 - a0), format)
            out.write_frame(f"{d}/positions.{format}", frames["positions"].slice(p0, p1 - p0), format)
            shards.append({"name": shard_name(k), "accounts": a1 - a0, "positions": p1 - p0,
                           "first_account_id": int(book.account_id[a0]),
                           "last_account_id": int(book.account_id[a1 - 1])})
        out.meta["shards"] = shards
    return Path(directory)


def is_sharded(directory: str | Path) -> bool:
    """Whether ``directory`` is a sharded book (has a ``shards/`` folder, or a sharded-book
    manifest)."""
    from .output import _peek_manifest

    d = Path(directory)
    if (d / SHARDS_DIR).is_dir():
        return True
    m = _peek_manifest(d) if d.is_dir() else None
    return m is not None and m.get("kind") == "shard"


def _manifest(directory: Path, only: str | None = None, verify: bool = True) -> dict:
    """The sharded book's manifest, verified (only the files under ``only`` when given):
    a sharded book without one (a ``synth --shards`` killed midway, by an older gpurisk) is
    refused, never read as the whole book."""
    from .output import read_manifest

    return read_manifest(directory, kind="shard", only=only, verify=verify)


def shard_paths(directory: str | Path) -> list[Path]:
    """The shard folders of a sharded book, in the manifest's shard order."""
    from .output import _missing_message

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"sharded book {_missing_message(directory)}")
    if not is_sharded(directory):
        raise FileNotFoundError(f"{directory} is not a sharded book (no {SHARDS_DIR}/ folder)")
    m = _manifest(directory, verify=False)  # files are verified where they are read
    paths = [directory / SHARDS_DIR / s["name"] for s in m["shards"]]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise FileNotFoundError(f"{directory}: shards named in {MANIFEST} are missing: {', '.join(missing[:5])}")
    return paths


def _whole_frames(root: Path) -> dict:
    """The tables every shard shares: markets, tiers and, when there is one, the collateral
    table (a pooled venue's: shards hold whole accounts, so every pool is in one shard)."""
    frames = {"markets": read_table(root, "markets"), "tiers": read_table(root, "tiers")}
    if any((root / f"collateral{ext}").is_file() for ext in _READERS):
        frames["collateral"] = read_table(root, "collateral")
    return frames


def _shard_frames(root: Path, shard: Path) -> dict:
    return {**_whole_frames(root), "accounts": read_table(shard, "accounts"),
            "positions": read_table(shard, "positions")}


def read_shard(directory: str | Path, shard: int | str | Path) -> Book:
    """One shard (by index, name or path) with the whole markets and tiers, validated alone:
    a position whose account is in another shard is an error."""
    root = Path(directory)
    if isinstance(shard, int):
        path = shard_paths(root)[shard]
    else:
        path = Path(shard) if Path(shard).is_absolute() or Path(shard).is_dir() else root / SHARDS_DIR / str(shard)
    from .output import ManifestError

    try:  # this shard's files and the shared tables match the manifest
        _manifest(root, only=(f"{SHARDS_DIR}/{path.name}/", "markets.", "tiers.", "collateral."))
    except ManifestError as exc:
        raise BookError([Problem(path.name, "", str(exc))]) from None
    try:
        return Book.from_frames(**_shard_frames(root, path))
    except BookError as exc:
        raise BookError([_in_shard(p, path.name) for p in exc.problems]) from None


def _in_shard(p: Problem, name: str) -> Problem:
    return Problem(f"{name}/{p.table}", p.column, p.rule, p.count, p.examples)


def read_sharded_book(directory: str | Path) -> Book:
    """A sharded book directory read back as one validated Book; also checks the layout
    (each account in one shard, contiguous account_id ranges in shard order, manifest counts)."""
    import polars as pl

    root = Path(directory)
    paths = shard_paths(root)
    _manifest(root)  # every file matches the manifest
    acc = [read_table(p, "accounts") for p in paths]
    pos = [read_table(p, "positions") for p in paths]
    problems = []
    m = _manifest(root, verify=False)
    if m is not None:
        for s, a, q in zip(m["shards"], acc, pos):
            if (a.height, q.height) != (s["accounts"], s["positions"]):
                problems.append(Problem(f"{s['name']}", "", f"holds {a.height} accounts and {q.height} positions; "
                                        f"{MANIFEST} says {s['accounts']} and {s['positions']}"))
    problems += _layout_problems(paths, acc, pos)
    if problems:
        raise BookError(problems)
    return Book.from_frames(**_whole_frames(root), accounts=pl.concat(acc, how="diagonal_relaxed"),
                            positions=pl.concat(pos, how="diagonal_relaxed"))


def _layout_problems(paths, acc, pos) -> list[Problem]:
    problems = []
    prev_last, prev_name = None, None
    for p, a, q in zip(paths, acc, pos):
        if "account_id" not in a.columns or a.height == 0 or not a["account_id"].dtype.is_integer():
            continue  # the table's own validation reports it
        ids = a["account_id"].drop_nulls()
        if ids.len() == 0:
            continue
        lo, hi = int(ids.min()), int(ids.max())
        if prev_last is not None and lo <= prev_last:
            problems.append(Problem(f"{p.name}/accounts", "account_id",
                                    f"shards must hold increasing, disjoint account_id ranges: starts at {lo}, "
                                    f"but {prev_name} ends at {prev_last}"))
        prev_last, prev_name = hi, p.name
        if "account_id" in q.columns and q.height:
            away = q.filter(~q["account_id"].is_in(ids.implode()))
            if away.height:
                problems.append(Problem(f"{p.name}/positions", "account_id",
                                        "an account's positions must be in the account's shard; not here",
                                        away.height, tuple(f"account_id={v!r}" for v in away["account_id"].head(5))))
    return problems
