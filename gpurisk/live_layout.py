"""A book layout with slack: free position rows reserved between accounts, so that a live
book's positions open and close by moving a few rows in place instead of splicing every
position array (gpurisk/book_updates.py, the monitor).

A free row has size 0: the kernels skip it in every account sum (kernels/margin.cu, as they
skip positions closed during a stress run) and it belongs to no ADL queue (kernels/adl.cu
queue_head_candidates), so a padded book revalues to the same bits as the compact one on its
live rows. Each account's rows are its live positions in storage order (symbol, margin mode)
followed by its free rows, if any. ``pad`` gives every ``every``-th account ``free`` free rows
at its end; ``open_row`` takes the nearest free row and shifts the rows between it and the new
position's place by one (changing ``pos_start`` of the accounts between); ``close_row`` shifts
the account's later positions back and frees its last row. What moved is a ``Move``; arrays
kept per position (statuses told to consumers, results) follow with ``Move.apply``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .book import Book

#: every EVERY-th account (and the last) ends with FREE free rows: about 4.7% more rows at
#: 2.66 positions per account, and a free row within a few dozen rows of any position
EVERY = 32
FREE = 4
#: an open looks this many rows either way for a free row; beyond, the book is re-laid out
SEARCH_ROWS = 4096
POSITION_FIELDS = ("pos_account", "pos_symbol", "size", "entry", "isolated", "isolated_margin", "leverage")
#: a free row: size 0 (skipped by the kernels), cross, no margin, an entry that divides cleanly
_FREE_VALUES = {"size": 0.0, "entry": 1.0, "isolated": 0, "isolated_margin": 0.0, "leverage": 0.0, "pos_symbol": 0}


@dataclass(frozen=True)
class Slack:
    every: int = EVERY
    free: int = FREE
    search_rows: int = SEARCH_ROWS


@dataclass(frozen=True)
class Move:
    """Rows [lo, hi) moved by ``shift`` (±1); then row ``row`` is the opened (or freed) one."""

    lo: int
    hi: int
    shift: int
    row: int

    def apply(self, values: np.ndarray, fill) -> None:
        """Move a per-position array's values with the rows; ``fill`` at the opened/freed row."""
        if self.hi > self.lo:
            values[self.lo + self.shift:self.hi + self.shift] = values[self.lo:self.hi].copy()
        values[self.row] = fill

    @property
    def rows(self) -> tuple[int, int]:
        """The rows whose content changed: [first, end)."""
        lo = min(self.lo, self.lo + self.shift, self.row)
        return lo, max(self.hi, self.hi + self.shift, self.row + 1)


def live_rows(book: Book) -> np.ndarray:
    """Indices of the rows holding positions (size != 0), in storage order."""
    return np.flatnonzero(book.size != 0)


def pad(book: Book, slack: Slack) -> tuple[Book, np.ndarray]:
    """``book`` (compact, or padded: its free rows are dropped first) laid out anew with
    ``slack``; returns the padded book and, per live row of ``book`` in order, its row in the
    padded one."""
    live = live_rows(book)
    n_acc = book.n_accounts
    counts = np.bincount(book.pos_account[live], minlength=n_acc).astype(np.int64)
    extra = np.zeros(n_acc, dtype=np.int64)
    if n_acc:
        extra[slack.every - 1::slack.every] = slack.free
        extra[-1] = slack.free
    pos_start = np.zeros(n_acc + 1, dtype=np.int64)
    np.cumsum(counts + extra, out=pos_start[1:])
    n = int(pos_start[-1])
    # live row k of account a goes to pos_start[a] + (its place among a's live rows)
    acc = book.pos_account[live].astype(np.int64)
    first_live = np.zeros(n_acc + 1, dtype=np.int64)
    np.cumsum(counts, out=first_live[1:])
    rows = pos_start[acc] + (np.arange(live.size, dtype=np.int64) - first_live[acc])
    fields = {}
    for k in POSITION_FIELDS:
        old = getattr(book, k)
        out = np.empty(n, dtype=old.dtype)
        if k == "pos_account":
            out[:] = np.repeat(np.arange(n_acc, dtype=old.dtype), counts + extra)
        else:
            out[:] = _FREE_VALUES[k]
        out[rows] = old[live]
        fields[k] = out
    padded = dataclasses.replace(book, pos_start=pos_start, meta={k: v for k, v in book.meta.items() if k != "hash"},
                                 **fields)
    return padded, rows


def compact(book: Book) -> tuple[Book, np.ndarray]:
    """The book without its free rows (fresh arrays), and the live rows it kept."""
    live = live_rows(book)
    counts = np.bincount(book.pos_account[live], minlength=book.n_accounts)
    pos_start = np.zeros(book.n_accounts + 1, dtype=np.int64)
    np.cumsum(counts, out=pos_start[1:])
    fields = {k: getattr(book, k)[live] for k in POSITION_FIELDS}
    return dataclasses.replace(book, pos_start=pos_start, meta={k: v for k, v in book.meta.items() if k != "hash"},
                               **fields), live


def _live_end(book: Book, a: int) -> int:
    """The end of account a's live rows (its first free row, or its end)."""
    start, end = int(book.pos_start[a]), int(book.pos_start[a + 1])
    free = np.flatnonzero(book.size[start:end] == 0)
    return start + int(free[0]) if free.size else end


def close_row(book: Book, i: int) -> Move:
    """Free position row ``i`` in place: its account's later positions move back one row."""
    a = int(book.pos_account[i])
    end = _live_end(book, a)
    move = Move(i + 1, end, -1, end - 1)
    for k in POSITION_FIELDS:
        if k != "pos_account":
            move.apply(getattr(book, k), _FREE_VALUES[k])
    return move


def open_row(book: Book, a: int, at: int, search_rows: int) -> Move | None:
    """Make row ``at`` (a place in account a's live rows, where the new position sorts) free
    for a new position of account a, taking the nearest free row within ``search_rows``:
    the rows between move by one and the accounts between start one row later (or earlier).
    None: no free row that near (the caller re-lays out the book). The row is left free:
    the caller writes the position."""
    n = book.n_positions
    ahead = np.flatnonzero(book.size[at:min(n, at + search_rows)] == 0)
    behind = np.flatnonzero(book.size[max(0, at - search_rows):at] == 0)
    if ahead.size and (not behind.size or ahead[0] <= at - 1 - (max(0, at - search_rows) + behind[-1])):
        f = at + int(ahead[0])
        owner = int(book.pos_account[f])
        move = Move(at, f, +1, at)
        book.pos_start[a + 1:owner + 1] += 1
    elif behind.size:
        f = max(0, at - search_rows) + int(behind[-1])
        owner = int(book.pos_account[f])
        move = Move(f + 1, at, -1, at - 1)
        book.pos_start[owner + 1:a + 1] -= 1
    else:
        return None
    for k in POSITION_FIELDS:
        move.apply(getattr(book, k), a if k == "pos_account" else _FREE_VALUES[k])
    return move
