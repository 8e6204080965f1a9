"""Result tables for a report, and the headline numbers.

What :mod:`gpurisk.report` draws from: :class:`RiskTables` and :class:`StressTables`, read back
from the Parquet files that ``Risk.write`` and ``StressResult.write`` produce
(:func:`load_risk_tables`, :func:`load_stress_tables`, each checked against its directory's
manifest) or cut to one settle asset (:func:`select_asset`); numbers formatted for people
(:func:`fmt`), and the headline rows shown at the top of the page and on the terminal
(:func:`headline`, :func:`format_headline`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

STATUSES = ("healthy", "margin_call", "liquidatable", "bankrupt")

STRESS_TABLES = ("summary", "liquidations", "adl_fills", "haircuts", "prices")


# ------------------------------------------------------------------ loaders


@dataclass
class RiskTables:
    """What a report needs of a revaluation: ``accounts`` and ``positions`` (the tables of
    :class:`~gpurisk.risk.Risk`). ``venue`` is the venue's name where known."""

    accounts: pl.DataFrame
    positions: pl.DataFrame
    venue: str | None = None
    margin_call_ratio: float = 0.8
    liquidation_ratio: float = 1.0

    def summary(self) -> pl.DataFrame:
        """Accounts, equity and maintenance margin per status (as ``Risk.summary``)."""
        return (self.accounts.group_by("status").agg(
            pl.len().alias("accounts"), pl.col("equity").sum(), pl.col("maint_margin").sum())
            .sort(pl.col("status").cast(pl.String).replace_strict(
                list(STATUSES), list(range(len(STATUSES))), default=len(STATUSES))))


@dataclass
class StressTables:
    """What a report needs of a stress run: the tables of :class:`~gpurisk.stress.StressResult`
    (``summary``, ``liquidations``, ``adl_fills``, ``haircuts``, ``prices``) and the base marks
    the shocks were applied to ({symbol: price}), where known."""

    summary: pl.DataFrame
    liquidations: pl.DataFrame
    adl_fills: pl.DataFrame
    haircuts: pl.DataFrame
    prices: pl.DataFrame
    comparison: pl.DataFrame | None = None
    base_marks: dict | None = None

    def for_asset(self, asset: str) -> "StressTables":
        """One asset's rows of a stress run on a book with several settle assets (without the
        ``asset`` column); tables without one are returned as they are."""
        if "asset" not in self.summary.columns:
            return self
        held = _str(self.summary["asset"]).unique().sort().to_list()
        if asset not in held:
            raise KeyError(f"no stress rows in {asset!r}; the stress results' assets are {', '.join(held)}")

        def one(df):
            return df.filter(_str(df["asset"]) == asset).drop("asset") if df is not None and "asset" in df.columns \
                else df

        return StressTables(*(one(getattr(self, n)) for n in STRESS_TABLES), comparison=one(self.comparison),
                            base_marks=self.base_marks)

    def policy_comparison(self) -> pl.DataFrame:
        if self.comparison is not None:
            return self.comparison
        from .stress import StressResult

        return StressResult(self.summary, self.liquidations, self.adl_fills, self.haircuts,
                            self.prices).policy_comparison()


def _read(d: Path, name: str) -> pl.DataFrame:
    from .output import ManifestError

    try:
        return pl.read_parquet(d / name)
    except Exception as exc:  # a file that matches its manifest but is not Parquet we can read
        raise ManifestError(f"{d / name} cannot be read as Parquet: {exc}") from None


def _checked(d: Path, kind: str, files: tuple[str, ...], what: str) -> dict:
    """The verified manifest of a result directory of ``kind`` listing ``files``."""
    from .output import ManifestError, read_manifest

    if d.is_dir() and not (d / "manifest.json").exists():
        present = [f for f in files if (d / f).exists()]
        missing = [f for f in files if not (d / f).exists()]
        if not present:
            raise FileNotFoundError(f"{d} has no {' or '.join(missing)}: give the directory written by {what}")
    m = read_manifest(d, kind=kind)
    missing = [f for f in files if f not in m.get("files", {})]
    if missing:
        raise ManifestError(f"{d}: its manifest lists no {', '.join(missing)}; give the directory written by {what}")
    return m


def load_risk_tables(directory: str | Path) -> RiskTables:
    """Read ``accounts.parquet`` and ``positions.parquet`` as written by ``Risk.write``, after
    checking them against the directory's manifest (gpurisk.output.read_manifest)."""
    d = Path(directory)
    m = _checked(d, "revalue", ("accounts.parquet", "positions.parquet"),
                 "`gpurisk revalue --out DIR` (or the results/ folder of `gpurisk demo`)")
    return RiskTables(accounts=_read(d, "accounts.parquet"), positions=_read(d, "positions.parquet"),
                      venue=m.get("venue"))


def load_stress_tables(directory: str | Path) -> StressTables:
    """Read the tables written by ``StressResult.write`` (summary, liquidations, adl_fills,
    haircuts, prices and policy_comparison .parquet) and, where present, the base marks
    (``base_marks.parquet``: symbol, mark_price), after checking them against the directory's
    manifest."""
    d = Path(directory)
    m = _checked(d, "stress", tuple(f"{n}.parquet" for n in STRESS_TABLES),
                 "`gpurisk stress --out DIR` (or StressResult.write)")
    tables = {name: _read(d, f"{name}.parquet") for name in STRESS_TABLES}
    files = m.get("files", {})
    base_marks = None
    if "base_marks.parquet" in files:
        b = _read(d, "base_marks.parquet")
        base_marks = dict(zip(b["symbol"].cast(pl.String).to_list(), b["mark_price"].to_list()))
    comp = _read(d, "policy_comparison.parquet") if "policy_comparison.parquet" in files else None
    return StressTables(**tables, comparison=comp, base_marks=base_marks)


def select_asset(asset: str, risk=None, stress=None) -> tuple:
    """(risk, stress) cut to one settle asset's rows (``gpurisk report --asset``): accounts
    and positions of that asset, and ``for_asset`` of the stress results. Results without an
    ``asset`` column are single-asset and kept whole."""
    if risk is not None and "asset" in risk.accounts.columns:
        held = _str(risk.accounts["asset"]).unique().sort().to_list()
        if asset not in held:
            raise KeyError(f"no accounts in {asset!r}; the results' assets are {', '.join(held)}")
        mc, lq, venue = _venue_levels(risk)
        risk = RiskTables(accounts=risk.accounts.filter(_str(risk.accounts["asset"]) == asset),
                          positions=risk.positions.filter(_str(risk.positions["asset"]) == asset),
                          venue=venue, margin_call_ratio=mc, liquidation_ratio=lq)
    if stress is not None:
        stress = stress.for_asset(asset)
    return risk, stress


def stress_assets(stress) -> list[str]:
    """The settle assets of stress results that hold several (their ``asset`` column); [] for
    single-asset results."""
    if stress is None or "asset" not in stress.summary.columns:
        return []
    return _str(stress.summary["asset"]).unique().sort().to_list()


def write_base_marks(directory: str | Path, book) -> Path:
    """Write ``base_marks.parquet`` (symbol, mark_price): the marks a stress run shocked, so a
    report read back from files can put the shock on its x axis."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"symbol": list(book.symbols), "mark_price": np.asarray(book.mark_price, float)}) \
        .write_parquet(d / "base_marks.parquet")
    return d / "base_marks.parquet"


# ------------------------------------------------------------------ numbers


def fmt(x, decimals: int = 2, small: bool = False) -> str:
    """A number for people: thousands separators, M/B/T from a million, ∞ for infinity;
    ``small``: three significant digits below 0.01 rather than rounding to ``decimals``."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    a = abs(x)
    if a >= 1e12:
        s = f"{x / 1e12:,.2f} T"
    elif a >= 1e9:
        s = f"{x / 1e9:,.2f} B"
    elif a >= 1e6:
        s = f"{x / 1e6:,.2f} M"
    elif small and 0 < a < 0.01:
        s = f"{x:.3g}"
    else:
        s = f"{x:,.{decimals}f}"
        if round(x, decimals) == 0:
            s = s.lstrip("-")  # no "−0.00" from rounding noise
    return s.replace("-", "−")


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%".replace("-", "−")


def _str(s: pl.Series) -> pl.Series:
    return s.cast(pl.String) if s.dtype != pl.String else s


def _venue_levels(risk) -> tuple[float, float, str | None]:
    v = getattr(risk, "venue", None)
    if v is None or isinstance(v, str):
        return (getattr(risk, "margin_call_ratio", 0.8), getattr(risk, "liquidation_ratio", 1.0), v)
    return float(v.margin_call_ratio), float(v.liquidation_ratio), v.name


def headline(risk=None, stress=None) -> list[tuple[str, str, str]]:
    """Headline numbers: (what, value, detail) rows for the terminal and the top of the page."""
    rows: list[tuple[str, str, str]] = []
    if risk is not None:
        acc, pos = risk.accounts, risk.positions
        counts = {s: int(n) for s, n in acc.group_by(_str(acc["status"]).alias("s")).len().iter_rows()}
        n_sym = pos["symbol"].n_unique() if pos.height else 0
        rows.append(("accounts", fmt(acc.height), f"{fmt(pos.height)} positions over {n_sym} symbols"))
        assets = acc["asset"].unique().sort().to_list() if "asset" in acc.columns else []
        if len(assets) > 1:  # money of different assets is never added up: one row per asset
            for a in map(str, assets):
                aa, pa = acc.filter(_str(acc["asset"]) == a), pos.filter(_str(pos["asset"]) == a)
                rows.append((f"equity ({a})", fmt(float(aa["equity"].sum())),
                             f"maintenance margin {fmt(float(aa['maint_margin'].sum()))}, gross notional "
                             f"{fmt(float(pa['notional'].sum()) if pa.height else 0.0)}"))
        else:
            rows.append(("equity", fmt(float(acc["equity"].sum())),
                         f"maintenance margin {fmt(float(acc['maint_margin'].sum()))}"))
            rows.append(("gross notional", fmt(float(pos["notional"].sum()) if pos.height else 0.0),
                         "Σ |size| × mark over all positions"))
        at_risk = counts.get("margin_call", 0) + counts.get("liquidatable", 0)
        rows.append(("at risk", fmt(at_risk),
                     f"margin call {fmt(counts.get('margin_call', 0))}, "
                     f"liquidatable {fmt(counts.get('liquidatable', 0))}"))
        if len(assets) > 1:
            short = ", ".join(f"{fmt(float((-acc.filter(_str(acc['asset']) == a)['equity'].clip(upper_bound=0.0)).sum()))} "
                              f"{a}" for a in map(str, assets))
            rows.append(("bankrupt", fmt(counts.get("bankrupt", 0)), f"negative equity {short}"))
        else:
            short = float((-acc["equity"].clip(upper_bound=0.0)).sum())
            rows.append(("bankrupt", fmt(counts.get("bankrupt", 0)), f"negative equity {fmt(short)}"))
    if stress is not None and stress.summary.height:
        s = stress.summary
        pols = _str(s["policy"]).unique(maintain_order=True).to_list()
        n_sc = s["scenario"].n_unique()
        rows.append(("scenarios", fmt(n_sc), f"× {len(pols)} ADL polic{'y' if len(pols) == 1 else 'ies'} "
                                             f"({', '.join(pols)})"))
        # money of different settle assets is never compared: the worst rows per asset
        for a in stress_assets(stress) or [None]:
            part = s if a is None else s.filter(_str(s["asset"]) == a)
            unit = "" if a is None else f" ({a})"
            w = part.sort(["deficit", "notional_liquidated"], descending=True).row(0, named=True)
            rows.append((f"worst deficit{unit}", fmt(w["deficit"]), f"scenario {w['scenario']}, {w['policy']}"))
            w = part.sort("notional_liquidated", descending=True).row(0, named=True)
            rows.append((f"most liquidated{unit}", fmt(w["notional_liquidated"]),
                         f"{fmt(w['accounts_liquidated'])} accounts, scenario {w['scenario']}, {w['policy']}"))
            w = part.sort("socialized_loss", descending=True).row(0, named=True)
            rows.append((f"worst socialized loss{unit}", fmt(w["socialized_loss"]),
                         f"{fmt(w['adl_accounts'])} accounts hit, scenario {w['scenario']}, {w['policy']}"))
    return rows


def format_headline(risk=None, stress=None) -> str:
    """The headline numbers as a small aligned text table for the terminal."""
    rows = headline(risk, stress)
    if not rows:
        return ""
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"  {a:<{w0}}  {b:>{w1}}   {c}" for a, b, c in rows)

