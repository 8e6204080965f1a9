"""Mark prices given by a caller (a dict, a frame, rows, pairs or an array in the book's symbol
order): checked as a book is, every problem named at once, then laid over the book's own marks."""

from __future__ import annotations

import math

import numpy as np

try:  # a frame of marks needs Polars; a dict or an array does not
    import polars as pl
except ImportError:  # pragma: no cover
    pl = None

from .book import Book, BookError, Problem


def _marks_items(book: Book | None, marks) -> tuple[list, list[str], list[Problem]]:
    """(symbol, price) pairs of ``marks`` in input order, how each row is named in messages,
    and the problems of its shape (columns, types) found without the book."""
    if isinstance(marks, dict) and set(marks) == {"symbol", "mark_price"} and \
            not isinstance(marks["symbol"], str):  # a dict of columns, not {symbol: price}
        marks = pl.DataFrame(marks) if pl is not None else list(zip(marks["symbol"], marks["mark_price"]))
    if isinstance(marks, dict):
        items = list(marks.items())
        return items, [f"{s}={p!r}" for s, p in items], []
    if isinstance(marks, (list, tuple)) and marks and all(isinstance(m, dict) for m in marks):
        marks = pl.DataFrame(marks) if pl is not None else [(m.get("symbol"), m.get("mark_price")) for m in marks]
    if isinstance(marks, (list, tuple)) and marks and all(isinstance(m, (list, tuple)) and len(m) == 2
                                                          and isinstance(m[0], str) for m in marks):
        items = [tuple(m) for m in marks]
        return items, [f"row {i} (symbol={s!r}, mark_price={p!r})" for i, (s, p) in enumerate(items)], []
    if isinstance(marks, (np.ndarray, list, tuple)):
        if book is None:
            raise TypeError("a marks array needs the book's symbol order")
        try:
            arr = np.asarray(marks, dtype=np.float64)
        except (TypeError, ValueError):
            return [], [], [Problem("marks", "mark_price", "a marks array must hold numbers")]
        if arr.shape != book.mark_price.shape:
            raise ValueError(f"marks array has {arr.shape[0] if arr.ndim else 0} prices; the book has "
                             f"{book.mark_price.size} symbols ({', '.join(book.symbols)})")
        items = list(zip(book.symbols, arr.tolist()))
        return items, [f"{s}={p!r}" for s, p in items], []
    df = marks if isinstance(marks, pl.DataFrame) else pl.DataFrame(marks)
    missing = [c for c in ("symbol", "mark_price") if c not in df.columns]
    problems = [Problem("marks", c, f"required column is missing (columns present: {', '.join(df.columns) or 'none'})")
                for c in missing]
    for c, want, ok in (("symbol", "text", lambda t: t in (pl.String, pl.Categorical) or isinstance(t, pl.Enum)),
                        ("mark_price", "a number", lambda t: t.is_numeric())):
        if c in df.columns and df[c].null_count() < df.height and not ok(df.schema[c]):
            problems.append(Problem("marks", c, f"must be {want}, got column type {df.schema[c]}"))
    if problems:
        return [], [], problems
    if df.height == 0:
        return [], [], [Problem("marks", "", "table is empty")]
    items = list(zip(df["symbol"].cast(pl.String).to_list(), df["mark_price"].cast(pl.Float64).to_list()))
    return items, [f"row {i} (symbol={s!r})" for i, (s, _) in enumerate(items)], []


def check_marks(marks, book: Book | None = None) -> list[tuple[str, float]]:
    """``marks`` ({symbol: price}, a frame or dict of columns symbol and mark_price, a list of
    such rows or of (symbol, price) pairs, or an array in the book's symbol order) as checked
    (symbol, price) pairs: one BookError naming every problem at once (columns, types, null or
    unknown symbols, a symbol priced twice, null, non-finite or non-positive prices, prices
    outside the input limits) and nothing silently dropped or overridden. Without ``book``
    the symbols are not checked against it (the CLI checks a marks file before reading the book)."""
    from .schema import PRICE_MAX, PRICE_MIN

    items, names, problems = _marks_items(book, marks)
    if problems:
        raise BookError(problems)

    def rule(column, rule_text, hits):
        if hits:
            problems.append(Problem("marks", column, rule_text, len(hits), tuple(names[i] for i in hits[:5])))

    syms = [s for s, _ in items]
    rule("symbol", "must not be null", [i for i, s in enumerate(syms) if s is None])
    if book is not None:
        unknown = [i for i, s in enumerate(syms) if s is not None and s not in book.symbols]
        if unknown:  # named by the symbol itself, as a book's message would
            problems.append(Problem("marks", "symbol", "must be a symbol of the book", len(unknown),
                                    tuple(repr(syms[i]) for i in unknown[:5])))
    seen: dict = {}
    for s in syms:
        seen[s] = seen.get(s, 0) + 1
    rule("symbol", "one price per symbol; priced more than once",
         [i for i, s in enumerate(syms) if s is not None and seen[s] > 1])

    def number(p):
        try:
            return float(p)
        except (TypeError, ValueError):
            return None

    prices = [number(p) if not isinstance(p, (bool, str)) else None for _, p in items]
    rule("mark_price", "must be finite and > 0",
         [i for i, p in enumerate(prices) if not (p is not None and math.isfinite(p) and p > 0)])
    rule("mark_price", f"must be in [{PRICE_MIN:g}, {PRICE_MAX:g}] (input limits, gpurisk.schema)",
         [i for i, p in enumerate(prices) if p is not None and math.isfinite(p) and p > 0
          and not PRICE_MIN <= p <= PRICE_MAX])
    if problems:
        raise BookError(problems)
    return [(s, p) for s, p in zip(syms, prices)]


def resolve_marks(book: Book, marks) -> np.ndarray:
    """Mark prices per symbol: the book's, overridden by ``marks`` ({symbol: price}, a frame
    with symbol and mark_price, or an array in the book's symbol order); see check_marks."""
    out = book.mark_price.copy()
    if marks is None:
        return out
    for s, p in check_marks(marks, book):
        out[book.symbols.index(s)] = p
    return out
