"""What a stress run records: per-scenario summary rows, every ladder action, ADL fill and
haircut, and the price paths; as NumPy arrays (StressRecords, no Polars) and as frames
(StressResult), with the codes that label them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .scenarios import fits_int64

POLICIES = ("queue", "pro_rata", "capped_pro_rata", "rap")
POLICY_CODE = {p: i for i, p in enumerate(POLICIES)}
ACTIONS = ("reduce", "liquidate", "backstop", "takeover")


@dataclass
class StressResult:
    """Per-scenario summary, every liquidation step, every ADL fill or haircut, price paths."""

    summary: object
    liquidations: object
    adl_fills: object
    haircuts: object
    prices: object
    timings: dict = field(default_factory=dict)
    #: the assets of the stressed book; with several, every table has an ``asset`` column
    assets: tuple = ()

    def for_asset(self, asset: str) -> "StressResult":
        """The rows of one asset (its margin pools, markets and fund), without the ``asset``
        column: what a stress of ``book.for_asset(asset)`` gives (symbols keep the whole book's
        labels). A single-asset result is returned as is when ``asset`` is its asset."""
        import polars as pl

        if "asset" not in self.summary.columns:
            if self.assets and asset not in self.assets:
                raise KeyError(f"no stress rows in {asset!r}; this result is in {', '.join(self.assets)}")
            return self
        held = self.assets or tuple(self.summary["asset"].cast(pl.String).unique(maintain_order=True).to_list())
        if asset not in held:
            raise KeyError(f"no stress rows in {asset!r}; this result's assets are {', '.join(held)}")

        def one(df):
            return df.filter(pl.col("asset").cast(pl.String) == asset).drop("asset")

        return StressResult(summary=one(self.summary), liquidations=one(self.liquidations),
                            adl_fills=one(self.adl_fills), haircuts=one(self.haircuts), prices=one(self.prices),
                            timings=self.timings.get("by_asset", {}).get(asset, self.timings), assets=(asset,))

    def policy_comparison(self):
        """Per policy (and asset, when the book holds several: money of different assets is
        never added), over all scenarios: deficit, insurance used, socialized loss, accounts
        hit, overshoot and the largest single haircut share (DESIGN §5)."""
        import polars as pl

        keys = ["policy", "asset"] if "asset" in self.summary.columns else "policy"
        return (self.summary.group_by(keys, maintain_order=True).agg(
            pl.len().alias("scenarios"), pl.col("deficit").sum(), pl.col("insurance_used").sum(),
            pl.col("socialized_loss").sum(), pl.col("unfunded").sum(), pl.col("adl_accounts").sum().alias("accounts_hit"),
            pl.col("overshoot").sum(), pl.col("max_haircut_share").max()))

    def write(self, directory: str | Path, book=None, venue=None, backend=None, inputs=(),
              table: str = "gpurisk_stress") -> Path | str:
        """Write the tables (summary, liquidations, adl_fills, haircuts, prices and
        policy_comparison .parquet) atomically, with a manifest (gpurisk.output). ``book``:
        the stressed Book, whose marks go to ``base_marks.parquet`` (the report's shock axis)
        and whose hash goes to the manifest. A ``postgresql://`` URI writes the same tables as
        ``<table>_summary`` etc. in one transaction and returns the run id (gpurisk.database)."""
        from .output import atomic_dir, book_hash, check_place, _held

        database = isinstance(directory, str) and directory.lower().startswith(("postgresql://", "postgres://"))
        if not database and not _held(Path(directory)):
            check_place(directory, "stress", inputs)
        meta = {"book_hash": book_hash(book) if book is not None else None,
                "venue": getattr(venue, "name", venue), "backend": getattr(backend, "name", backend)}
        if book is not None and hasattr(book, "mark_price"):
            meta["marks"] = dict(zip(book.symbols, [float(x) for x in book.mark_price]))
        if database:
            from .database import write_frames

            names = ("summary", "liquidations", "adl_fills", "haircuts", "prices")
            return write_frames(directory, {**{n: getattr(self, n) for n in names},
                                            "policy_comparison": self.policy_comparison()}, table, "stress", meta)
        with atomic_dir(directory, "stress", meta, inputs) as out:
            for name in ("summary", "liquidations", "adl_fills", "haircuts", "prices"):
                out.write_parquet(f"{name}.parquet", getattr(self, name))
            out.write_parquet("policy_comparison.parquet", self.policy_comparison())
            if "marks" in meta:
                import polars as pl

                out.write_parquet("base_marks.parquet", pl.DataFrame(
                    {"symbol": list(meta["marks"]), "mark_price": list(meta["marks"].values())},
                    schema={"symbol": pl.String, "mark_price": pl.Float64}))
        return Path(directory)


# Columns and dtypes of each table in StressRecords (codes: policy -> POLICIES, symbol -> the
# book's symbols, margin_mode -> MARGIN_MODES, action -> ACTIONS).
MARGIN_MODES = ("cross", "isolated")
SUMMARY_COLUMNS = {
    "scenario": np.int64, "policy": np.int8, "steps": np.int64, "accounts_liquidated": np.int64,
    "notional_liquidated": np.float64, "deficit": np.float64, "insurance_used": np.float64,
    "insurance_left": np.float64, "unfunded": np.float64, "adl_notional": np.float64, "adl_accounts": np.int64,
    "socialized_loss": np.float64, "overshoot": np.float64, "max_haircut_share": np.float64,
    "external_value": np.float64, "conservation_error": np.float64}
LIQUIDATION_COLUMNS = {
    "scenario": np.int64, "policy": np.int8, "step": np.int64, "account_id": np.int64, "symbol": np.int32,
    "margin_mode": np.int8, "action": np.int8, "margin_ratio": np.float64, "qty": np.float64, "price": np.float64}
ADL_FILL_COLUMNS = {
    "scenario": np.int64, "policy": np.int8, "step": np.int64, "symbol": np.int32, "bankrupt_account_id": np.int64,
    "counterparty_account_id": np.int64, "qty": np.float64, "price": np.float64}
HAIRCUT_COLUMNS = {
    "scenario": np.int64, "policy": np.int8, "step": np.int64, "symbol": np.int32, "account_id": np.int64,
    "amount": np.float64}
PRICE_COLUMNS = {"scenario": np.int64, "policy": np.int8, "step": np.int64, "symbol": np.int32,
                 "mark_price": np.float64}


@dataclass
class StressRecords:
    """A stress run as plain NumPy arrays (no Polars): each table is a dict of column name ->
    1-D array, with the columns and dtypes of ``*_COLUMNS`` above. ``summary`` has one entry
    per (scenario, policy) run, in run order; codes stay integers (see ``*_COLUMNS``).
    ``to_result()`` builds the frames of ``StressResult``."""

    summary: dict
    liquidations: dict
    adl_fills: dict
    haircuts: dict
    prices: dict
    symbols: tuple  # the book's symbols, which the symbol codes index
    timings: dict = field(default_factory=dict)
    #: the book's assets; with several, every table has an ``asset`` code column (indexing
    #: them) after ``policy`` (gpurisk/stress_assets.py)
    assets: tuple = ()

    def to_result(self, scenario_labels: np.ndarray | None = None) -> StressResult:
        """The frames of ``StressResult`` (needs Polars). ``scenario_labels``: see ``_results``."""
        return _results(self, scenario_labels)


class _Run:
    """A scalar that is ``n`` rows' value in a record table (see _Records.extend)."""

    __slots__ = ("n", "value")

    def __init__(self, n: int, value):
        self.n, self.value = int(n), value


#: record tables of at least this many rows finish their columns on threads (FINISH_THREADS)
FINISH_THREADS_ROWS = 1 << 20
#: record tables of at least this many rows become chunked frames (``_Records.frames``)
CHUNKED_FRAME_ROWS = 1 << 20
FINISH_THREADS = 2


def _column(parts: list, dtype) -> np.ndarray:
    """One record column from its parts in order (arrays and _Run scalars), in ``dtype``,
    written piece by piece into one new array (NumPy lets go of the GIL while it copies or
    fills a slice, so columns finish side by side on threads: most of their time is the first
    touch of the new array's pages)."""
    if not parts:
        return np.zeros(0, dtype=dtype)
    runs = [isinstance(p, _Run) for p in parts]
    out = np.empty(sum(p.n if r else p.size for p, r in zip(parts, runs)), dtype=dtype)
    at = 0
    for p, r in zip(parts, runs):
        n = p.n if r else p.size
        out[at:at + n] = p.value if r else p
        at += n
    return out


class _Records:
    """Result rows as they are produced, kept as arrays; with detail=False only the summary
    and price paths. ``finish`` turns them into StressRecords."""

    def __init__(self, detail: bool = True):
        self.detail = detail
        self.liq: dict[str, list] = {k: [] for k in LIQUIDATION_COLUMNS}
        self.fills: dict[str, list] = {k: [] for k in ADL_FILL_COLUMNS}
        self.cuts: dict[str, list] = {k: [] for k in HAIRCUT_COLUMNS}
        self.prices: dict[str, list] = {k: [] for k in PRICE_COLUMNS}
        self.summary: dict[str, list] = {k: [] for k in SUMMARY_COLUMNS}

    def extend(self, table: dict, n: int, **cols):
        """Rows of one of this record's tables; a scalar is every row's value, kept as one
        (count, value) run until ``finish`` writes the column (a step's scenario, policy and
        step labels are never materialised per step and copied again)."""
        for k, v in cols.items():
            table[k].append(_Run(n, v) if np.ndim(v) == 0 else np.asarray(v))

    def take(self, other: "_Records"):
        """Append another's rows after these (a scenario run apart, in its place in the order)."""
        for mine, theirs in ((self.liq, other.liq), (self.fills, other.fills), (self.cuts, other.cuts),
                             (self.prices, other.prices), (self.summary, other.summary)):
            for k, v in theirs.items():
                mine[k].extend(v)

    def add_summary(self, row: dict):
        """One (scenario, policy) run's summary (a dict with the policy by name)."""
        if row.keys() != self.summary.keys():
            raise KeyError(f"summary row has columns {list(row)}, expected {list(self.summary)}")
        for k, v in row.items():
            self.summary[k].append(POLICY_CODE[v] if k == "policy" else v)

    def finish(self, symbols, timings: dict) -> StressRecords:
        rows = sum(_rows(t) for t in (self.liq, self.fills, self.cuts))
        pool = ThreadPoolExecutor(FINISH_THREADS) if rows >= FINISH_THREADS_ROWS else None

        def arrays(table: dict, dtypes: dict) -> dict:
            if pool is None:
                return {k: _column(v, dtypes[k]) for k, v in table.items()}
            return {k: f.result() for k, f in [(k, pool.submit(_column, v, dtypes[k])) for k, v in table.items()]}

        try:
            return StressRecords(summary=self._summary_arrays(),
                                 liquidations=arrays(self.liq, LIQUIDATION_COLUMNS),
                                 adl_fills=arrays(self.fills, ADL_FILL_COLUMNS),
                                 haircuts=arrays(self.cuts, HAIRCUT_COLUMNS),
                                 prices=arrays(self.prices, PRICE_COLUMNS), symbols=tuple(symbols), timings=timings)
        finally:
            if pool is not None:
                pool.shutdown()

    def frames(self, symbols, timings: dict, scenario_labels: np.ndarray | None = None,
               assets: tuple = ()) -> StressResult:
        """StressResult straight from the records (needs Polars): the frames ``finish`` and
        ``to_result`` give, without first copying every detail row into one array per column
        (a detail run's tables run to millions of rows, and that copy's fresh pages cost more
        than the frames): each detail table is chunked, a chunk per step of a run."""
        raw = {"summary": _coded_frame(self._summary_arrays(), scenario_labels, summary=True)}
        for name, (table, dtypes) in TABLES.items():
            if name == "summary":
                continue
            parts = getattr(self, table)
            if _rows(parts) >= CHUNKED_FRAME_ROWS:
                raw[name] = _chunked_frame(parts, dtypes, scenario_labels)
            else:  # a small table in one piece: no frame per step of every run
                raw[name] = _coded_frame({k: _column(v, dtypes[k]) for k, v in parts.items()}, scenario_labels)
        return _labelled(raw, tuple(symbols), tuple(assets), timings)

    def _summary_arrays(self) -> dict:
        return {k: np.array(v, dtype=SUMMARY_COLUMNS[k]) for k, v in self.summary.items()}


def _rows(table: dict) -> int:
    """Rows of a record table (its columns' parts line up: any column's count)."""
    return sum(p.n if isinstance(p, _Run) else p.size for p in next(iter(table.values()), []))


def _scenario_column(ids: np.ndarray, labels: np.ndarray | None, summary: bool) -> np.ndarray:
    """A table's scenario column as ``stress`` has always written it: the frame's own labels.
    Integer labels are int64 in the summary and keep their dtype in a non-empty detail table;
    an empty detail table is int64."""
    if labels is None or ids.size == 0:
        return ids
    if fits_int64(labels):
        return ids if summary else ids.astype(labels.dtype)
    return labels[ids]


def _results(rec: StressRecords, scenario_labels: np.ndarray | None = None) -> StressResult:
    """StressResult frames from StressRecords: codes become Enum labels. ``scenario_labels``
    (``scenario_paths``' ids, when the run used ``run_ids`` of them) gives the scenario
    columns back the scenario frame's values and dtype."""
    raw = {name: _coded_frame(getattr(rec, name), scenario_labels, summary=name == "summary") for name in TABLES}
    return _labelled(raw, rec.symbols, rec.assets, rec.timings)


def _coded_frame(table: dict, scenario_labels: np.ndarray | None, summary: bool = False):
    """A table's frame from its arrays, codes as they are, the scenario column labelled."""
    import polars as pl

    return pl.DataFrame(dict(table, scenario=_scenario_column(table["scenario"], scenario_labels, summary)))


#: StressResult's tables, and the record tables (_Records) and column dtypes they come from
TABLES = {"summary": ("summary", SUMMARY_COLUMNS), "liquidations": ("liq", LIQUIDATION_COLUMNS),
          "adl_fills": ("fills", ADL_FILL_COLUMNS), "haircuts": ("cuts", HAIRCUT_COLUMNS),
          "prices": ("prices", PRICE_COLUMNS)}


def _labelled(raw: dict, symbols, assets, timings: dict) -> StressResult:
    """StressResult from its tables' frames in codes (``raw``, by table name): policy, asset,
    symbol, margin mode and action become Enum labels."""
    import polars as pl

    def labelled(codes, labels) -> pl.Series:
        return pl.Series(list(labels), dtype=pl.Enum(list(labels))).gather(codes)

    def frame(df: pl.DataFrame) -> pl.DataFrame:
        if "asset" in df.columns:
            df = df.with_columns(labelled(df["asset"], assets).alias("asset"))
        return df.with_columns(labelled(df["policy"], POLICIES).alias("policy"))

    def with_symbols(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(labelled(df["symbol"], symbols).alias("symbol"))

    liq = raw["liquidations"]
    liq = with_symbols(frame(liq)).with_columns(labelled(liq["margin_mode"], MARGIN_MODES).alias("margin_mode"),
                                                labelled(liq["action"], ACTIONS).alias("action"))
    return StressResult(summary=frame(raw["summary"]), liquidations=liq, adl_fills=with_symbols(frame(raw["adl_fills"])),
                        haircuts=with_symbols(frame(raw["haircuts"])), prices=with_symbols(frame(raw["prices"])),
                        timings=timings, assets=tuple(assets))


def _chunked_frame(parts: dict, dtypes: dict, scenario_labels: np.ndarray | None):
    """A record table's frame straight from its parts (_Records), a chunk per ``extend``,
    without concatenating them: arrays are taken as they are (zero-copy; a view of another
    array is copied, as the view's memory may be reused), scalar runs are repeated by Polars.
    The same frame, value for value and dtype for dtype, as ``_results`` builds from
    StressRecords."""
    import polars as pl

    names = list(dtypes)
    n_chunks = len(parts[names[0]])
    if n_chunks == 0:
        return pl.DataFrame(dict({k: np.zeros(0, dtype=t) for k, t in dtypes.items()},
                                 scenario=_scenario_column(np.zeros(0, np.int64), scenario_labels, False)))
    chunks = []
    for i in range(n_chunks):
        cols = {}
        for k in names:
            p = parts[k][i]
            if isinstance(p, _Run):
                one = np.asarray([p.value], dtype=dtypes[k])
                if k == "scenario":
                    one = _scenario_column(one, scenario_labels, False)
                cols[k] = pl.Series(k, one).new_from_index(0, p.n)
            else:
                a = p.astype(dtypes[k], copy=False)
                if k == "scenario":
                    a = _scenario_column(a, scenario_labels, False)
                cols[k] = pl.Series(k, a if a.flags.owndata else a.copy())
        chunks.append(pl.DataFrame(cols))
    return pl.concat(chunks, rechunk=False)
