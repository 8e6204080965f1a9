"""Stress scenarios: relative moves of the book's mark prices per (scenario, step, symbol), as
a grid, a file or a frame, validated like a book and turned into the arrays the stress engine
runs: (scenario ids, shocks[scenario, step, symbol]). Polars only where frames come in."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .book import Book, BookError, Problem


def shock_grid(lo: float, hi: float, n: int, symbols=None):
    """``n`` scenarios moving every symbol (or ``symbols``) by the same relative shock,
    evenly from ``lo`` to ``hi`` (e.g. -0.5 .. 0.5). A (scenario, symbol, shock) frame;
    symbol ``"*"`` means every symbol of the book."""
    import polars as pl

    if n < 1 or not (-1 < lo <= hi):
        raise ValueError("shock_grid needs n >= 1 and -1 < lo <= hi")
    shocks = np.linspace(lo, hi, n) if n > 1 else np.array([lo])
    syms = ["*"] if symbols is None else list(symbols)
    return pl.DataFrame({
        "scenario": np.repeat(np.arange(n), len(syms)),
        "symbol": syms * n,
        "shock": np.repeat(shocks, len(syms)),
    })


def read_scenarios(path: str | Path):
    """A scenario file (.parquet or .csv) with columns scenario, symbol, shock and, for price
    paths, step."""
    import polars as pl

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scenario file {path} does not exist")
    return pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)


def scenario_paths(book: Book, scenarios) -> tuple[np.ndarray, np.ndarray]:
    """(scenario ids, shocks[scenario, step, symbol]) from a scenario frame. Steps not given
    repeat the last one given; symbols not given are not shocked.

    The frame is validated like a book, every problem at once, rows named (a BookError):
    columns and their types, an empty frame, null scenario ids or symbols, unknown symbols,
    shocks that are not finite and > -1 or that move a mark outside the input limits
    (gpurisk.schema.PRICE_MIN..PRICE_MAX), steps that are not whole numbers in
    [0, MAX_STEPS), duplicated (scenario, step, symbol) rows, and a shock array larger than
    SHOCK_CUBE_MAX_BYTES (checked before it is allocated)."""
    import polars as pl

    from .schema import MAX_STEPS, PRICE_MAX, PRICE_MIN, SHOCK_CUBE_MAX_BYTES

    if isinstance(scenarios, pl.LazyFrame):
        scenarios = scenarios.collect()
    try:
        df = scenarios if isinstance(scenarios, pl.DataFrame) else pl.DataFrame(scenarios)
    except Exception as exc:  # not a table at all
        raise BookError([Problem("scenarios", "", f"cannot be read as a table: {exc}")]) from exc
    problems: list[Problem] = []
    present = ", ".join(df.columns) or "none"
    for c in ("scenario", "symbol", "shock"):
        if c not in df.columns:
            problems.append(Problem("scenarios", c, f"required column is missing (columns present: {present})"))
    kinds = {"scenario": ("an integer or text", lambda t: t.is_integer() or t in (pl.String, pl.Categorical)
                          or isinstance(t, pl.Enum)),
             "symbol": ("text", lambda t: t in (pl.String, pl.Categorical) or isinstance(t, pl.Enum)),
             "shock": ("a number", lambda t: t.is_numeric()),
             "step": ("a whole number", lambda t: t.is_numeric())}
    for c, (want, ok) in kinds.items():
        if c in df.columns and df[c].null_count() < df.height and not ok(df.schema[c]):
            problems.append(Problem("scenarios", c, f"must be {want}, got column type {df.schema[c]}"))
    if not problems and df.height == 0:
        problems.append(Problem("scenarios", "", "table is empty (no scenario)"))
    if problems:
        raise BookError(problems)
    if "step" not in df.columns:
        df = df.with_columns(pl.lit(0).alias("step"))
    df = df.with_columns(pl.col("symbol").cast(pl.String), pl.col("shock").cast(pl.Float64),
                         pl.col("step").cast(pl.Float64).alias("__step")).with_row_index("__row")

    def rule(column: str, bad: pl.Expr, text: str, keys=("scenario", "symbol")) -> None:
        hits = df.filter(bad.fill_null(True))
        if hits.height:
            shown = tuple(f"row {r[0]} (" + ", ".join(f"{k}={v!r}" for k, v in zip(keys, r[1:])) + ")"
                          for r in hits.select("__row", *keys).head(5).iter_rows())
            problems.append(Problem("scenarios", column, text, hits.height, shown))

    rule("scenario", pl.col("scenario").is_null(), "must not be null")
    rule("symbol", pl.col("symbol").is_null(), "must not be null")
    known = set(book.symbols) | {"*"}
    rule("symbol", pl.col("symbol").is_not_null() & ~pl.col("symbol").is_in(list(known)),
         "must be a symbol of the book (or '*')", keys=("symbol",))
    shock = pl.col("shock")
    rule("shock", ~(shock.is_finite() & (shock > -1)), "must be finite and > -1 (a relative move)")
    base = getattr(book, "mark_price", None)
    if base is not None:  # the shocked marks must stay within the input limits
        lo = {s: PRICE_MIN / float(m) - 1 for s, m in zip(book.symbols, base)}
        hi = {s: PRICE_MAX / float(m) - 1 for s, m in zip(book.symbols, base)}
        lo["*"], hi["*"] = max(lo.values(), default=-1.0), min(hi.values(), default=np.inf)
        sym = pl.col("symbol")
        lo_e = sym.replace_strict(list(lo), list(lo.values()), default=None, return_dtype=pl.Float64)
        hi_e = sym.replace_strict(list(hi), list(hi.values()), default=None, return_dtype=pl.Float64)
        rule("shock", (shock.is_finite() & (shock > -1) & ((shock < lo_e) | (shock > hi_e))).fill_null(False),
             f"the shocked mark price mark·(1 + shock) must be in [{PRICE_MIN:g}, {PRICE_MAX:g}] "
             "(input limits, gpurisk.schema)")
    step = pl.col("__step")
    rule("step", ~(step.is_finite() & (step >= 0) & (step == step.floor()) & (step < MAX_STEPS)),
         f"must be a whole number in [0, {MAX_STEPS - 1}] (MAX_STEPS, gpurisk.schema)",
         keys=("scenario", "step"))
    rule("symbol", pl.struct("scenario", "step", "symbol").is_duplicated() & pl.col("scenario").is_not_null()
         & pl.col("symbol").is_not_null(), "one shock per (scenario, step, symbol); duplicates",
         keys=("scenario", "step", "symbol"))
    if not problems:
        n_ids, n_steps = df["scenario"].n_unique(), int(df["__step"].max()) + 1
        cube = n_ids * n_steps * max(book.n_symbols, 1) * 8
        if cube > SHOCK_CUBE_MAX_BYTES:
            problems.append(Problem(
                "scenarios", "step", f"{n_ids:,} scenarios × {n_steps:,} steps × {book.n_symbols} symbols of shocks "
                f"would take {cube / 2**30:.1f} GiB, more than the {SHOCK_CUBE_MAX_BYTES / 2**30:g} GiB allowed "
                "(SHOCK_CUBE_MAX_BYTES, gpurisk.schema): split the scenarios into runs"))
    if problems:
        raise BookError(problems)
    df = df.with_columns(pl.col("__step").cast(pl.Int64).alias("step"))
    ids = df["scenario"].unique(maintain_order=False).sort()
    n_steps = int(df["step"].max()) + 1
    shocks = np.full((ids.len(), n_steps, book.n_symbols), np.nan)
    sidx = df["scenario"].cast(pl.String).replace_strict(ids.cast(pl.String).to_list(),
                                                         list(range(ids.len()))).to_numpy()
    steps = df["step"].to_numpy()
    for star in (True, False):  # "*" first, named symbols override it
        mask = (df["symbol"] == "*").to_numpy() == star
        if star:
            for r in np.nonzero(mask)[0]:
                shocks[sidx[r], steps[r], :] = df["shock"][int(r)]
        else:
            sym = df["symbol"].to_numpy()
            for r in np.nonzero(mask)[0]:
                shocks[sidx[r], steps[r], book.symbols.index(sym[r])] = df["shock"][int(r)]
    # A step given for some symbols only keeps the others where they were.
    for t in range(n_steps):
        prev = shocks[:, t - 1, :] if t else np.zeros_like(shocks[:, 0, :])
        shocks[:, t, :] = np.where(np.isnan(shocks[:, t, :]), prev, shocks[:, t, :])
    return ids.to_numpy(), shocks


def fits_int64(a: np.ndarray) -> bool:
    return a.dtype.kind == "i" or (a.dtype.kind == "u" and (a.size == 0 or int(a.max()) <= np.iinfo(np.int64).max))


def check_paths(book: Book, scenario_ids, shocks) -> tuple[np.ndarray, np.ndarray]:
    """run_stress's arrays, checked (a BookError naming every problem); the ids as int64."""
    from .schema import MAX_STEPS, PRICE_MAX, PRICE_MIN

    ids, shocks = np.asarray(scenario_ids), np.asarray(shocks)
    problems = []
    if ids.ndim != 1 or not fits_int64(ids):
        problems.append(Problem("scenarios", "scenario", f"scenario_ids must be a 1-D int64 array; got {ids.dtype} "
                                                         f"of shape {ids.shape}"))
    elif ids.size == 0:
        problems.append(Problem("scenarios", "scenario", "needs at least one scenario"))
    if shocks.dtype == np.float64 and shocks.ndim == 3 and shocks.shape[1] > MAX_STEPS:
        problems.append(Problem("scenarios", "step", f"at most {MAX_STEPS:,} steps (MAX_STEPS, gpurisk.schema); "
                                                     f"shocks has {shocks.shape[1]:,}"))
    if shocks.dtype != np.float64 or shocks.ndim != 3 or shocks.shape[1] < 1 or shocks.shape[2] != book.n_symbols:
        problems.append(Problem("scenarios", "shock", f"shocks must be a float64 array (scenario, step >= 1, "
                                                      f"symbol = {book.n_symbols}); got {shocks.dtype} of shape "
                                                      f"{shocks.shape}"))
    elif ids.ndim == 1 and shocks.shape[0] != ids.size:
        problems.append(Problem("scenarios", "shock", f"needs one row of shocks per scenario id: {ids.size} ids, "
                                                      f"{shocks.shape[0]} rows"))
    if problems:
        raise BookError(problems)
    bad = ~(np.isfinite(shocks) & (shocks > -1))
    if bad.any():
        problems.append(Problem("scenarios", "shock", "must be finite and > -1 (a relative move)", int(bad.sum()),
                                tuple(f"scenario={ids[k]}, step={t}, symbol={book.symbols[j]!r}"
                                      for k, t, j in np.argwhere(bad)[:5])))
    with np.errstate(invalid="ignore", over="ignore"):
        moved = book.mark_price[None, None, :] * (1 + shocks)
        out = ~bad & ~((moved >= PRICE_MIN) & (moved <= PRICE_MAX))
    if out.any():
        problems.append(Problem("scenarios", "shock", f"the shocked mark price mark·(1 + shock) must be in "
                                                      f"[{PRICE_MIN:g}, {PRICE_MAX:g}] (input limits, gpurisk.schema)",
                                int(out.sum()), tuple(f"scenario={ids[k]}, step={t}, symbol={book.symbols[j]!r}"
                                                      for k, t, j in np.argwhere(out)[:5])))
    distinct, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        problems.append(Problem("scenarios", "scenario", "one row per scenario id; duplicated ids",
                                int(counts[counts > 1].sum()),
                                tuple(f"scenario={v}" for v in distinct[counts > 1][:5])))
    if problems:
        raise BookError(problems)
    return ids.astype(np.int64), shocks


def run_ids(labels: np.ndarray) -> np.ndarray:
    """int64 ids to run ``scenario_paths``' scenario labels under: the labels themselves when
    they are integers, else their positions (``_scenario_column`` maps them back)."""
    return labels.astype(np.int64) if fits_int64(labels) else np.arange(len(labels), dtype=np.int64)
