"""Reports people would rather look at: one self-contained HTML page with plots and tables,
and a few headline numbers for the terminal.

``write_report(path, risk=..., stress=...)`` takes a :class:`~gpurisk.engine.Risk` and/or a
:class:`~gpurisk.stress.StressResult`, or the same tables read back from the Parquet files
that ``Risk.write`` and ``StressResult.write`` produce (:func:`load_risk_tables`,
:func:`load_stress_tables`). Plots are PNGs drawn with Matplotlib's Agg renderer (no
display, no global pyplot state) and embedded as base64 data URIs, so the page is one file
that opens anywhere and can be mailed around.

Every plot aggregates before it draws (histogram bins, queue curves sampled to a few
thousand points, sums per step), so a book of millions of positions gives the same small,
readable page as a toy one.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

STATUSES = ("healthy", "margin_call", "liquidatable", "bankrupt")
STATUS_COLOURS = {"healthy": "#2f9e63", "margin_call": "#e3a21a", "liquidatable": "#d9480f",
                  "bankrupt": "#7b1e1e"}
STATUS_LABELS = {"healthy": "healthy", "margin_call": "margin call", "liquidatable": "liquidatable",
                 "bankrupt": "bankrupt"}
# ADL lights 1 (back of the queue) .. 5 (front: deleveraged first).
LIGHT_COLOURS = {1: "#1a9850", 2: "#91cf60", 3: "#f2c84b", 4: "#fc8d59", 5: "#d73027"}
POLICY_COLOURS = ("#1f5fa8", "#d9480f", "#2f9e63", "#8e44ad", "#7f6a00", "#c2185b")
SYMBOL_COLOURS = ("#1f5fa8", "#d9480f", "#2f9e63", "#8e44ad", "#c2185b", "#7f6a00", "#0097a7",
                  "#5d4037", "#f57c00", "#455a64", "#9e9d24", "#6a1b9a")

MAX_QUEUE_POINTS = 2000  # points per ADL queue curve, whatever the queue's length
DPI = 110

STRESS_TABLES = ("summary", "liquidations", "adl_fills", "haircuts", "prices")


# ------------------------------------------------------------------ loaders


@dataclass
class RiskTables:
    """What a report needs of a revaluation: ``accounts`` and ``positions`` (the tables of
    :class:`~gpurisk.engine.Risk`). ``venue`` is the venue's name where known."""

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


# ------------------------------------------------------------------ figures


def _figure(w: float, h: float, ncols: int = 1, nrows: int = 1, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    for ax in axes.ravel():
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, color="#e6e6e6", linewidth=0.7)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=8.5)
    return fig, axes


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _rc():
    import matplotlib

    return matplotlib.rc_context({
        "font.size": 9.5, "axes.titlesize": 10.5, "axes.titleweight": "bold", "axes.labelsize": 9.5,
        "axes.edgecolor": "#888888", "legend.fontsize": 8.5, "legend.frameon": False,
        "axes.formatter.use_mathtext": True, "font.family": "DejaVu Sans"})


def _money_axis(ax, axis: str = "y"):
    from matplotlib.ticker import FuncFormatter

    f = FuncFormatter(lambda v, _: fmt(v, 0) if abs(v) >= 1 or v == 0 else fmt(v, small=True))
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(f)


def _compact(v: float) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def _percent_axis(ax, axis: str = "y", signed: bool = True):
    from matplotlib.ticker import FuncFormatter

    f = FuncFormatter(lambda v, _: (f"{v * 100:+.0f}%" if signed and abs(v) > 1e-12 else f"{v * 100:.0f}%")
                      .replace("-", "−"))
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(f)


def _policy_colours(policies) -> dict:
    return {p: POLICY_COLOURS[k % len(POLICY_COLOURS)] for k, p in enumerate(policies)}


def _policies(stress) -> list[str]:
    return _str(stress.summary["policy"]).unique(maintain_order=True).to_list() if stress.summary.height else []


def _edges(lo: float, hi: float, marks: list[float], log: bool, per_decade: int = 24, n_lin: int = 80):
    """Histogram edges from lo to hi with an edge exactly at each of ``marks`` in between."""
    points = sorted({lo, hi, *[m for m in marks if lo < m < hi]})
    out = []
    for a, b in zip(points[:-1], points[1:]):
        if log:
            n = max(2, int(math.ceil(math.log10(b / a) * per_decade)) + 1)
            seg = np.geomspace(a, b, n)
        else:
            n = max(2, int(math.ceil((b - a) / (hi - lo) * n_lin)) + 1)
            seg = np.linspace(a, b, n)
        out.append(seg[:-1])
    out.append([points[-1]])
    return np.concatenate(out)


def fig_margin_ratio(accounts: pl.DataFrame, margin_call: float = 0.8, liquidation: float = 1.0) -> str | None:
    """Histogram of account margin ratios over the status bands, and accounts per status."""
    if accounts.height == 0:
        return None
    r = accounts["margin_ratio"].to_numpy()
    status = _str(accounts["status"]).to_numpy()
    finite = r[np.isfinite(r) & (r > 0)]
    n_flat = int(np.sum(r == 0))
    counts = {s: int(np.sum(status == s)) for s in STATUSES}
    with _rc():
        fig, axes = _figure(10.5, 3.6, ncols=2, width_ratios=[2.6, 1])
        ax, axb = axes[0]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            lo = min(lo, margin_call * 0.5)
            hi = max(hi, liquidation * 1.25)
            log = hi / max(lo, 1e-300) > 30
            if log:
                lo = max(lo, hi * 1e-8)
            edges = _edges(lo * (0.999 if log else 1), hi * 1.001, [margin_call, liquidation], log)
            hist, _ = np.histogram(np.clip(finite, edges[0], edges[-1]), bins=edges)
            centre = np.sqrt(edges[:-1] * edges[1:]) if log else (edges[:-1] + edges[1:]) / 2
            band = np.where(centre < margin_call, "healthy", np.where(centre < liquidation, "margin_call",
                                                                     "liquidatable"))
            for b, (x0, x1) in {"healthy": (edges[0], margin_call), "margin_call": (margin_call, liquidation),
                                "liquidatable": (liquidation, edges[-1])}.items():
                if x1 > x0:
                    ax.axvspan(x0, x1, color=STATUS_COLOURS[b], alpha=0.07, lw=0)
            ax.bar(edges[:-1], hist, width=np.diff(edges), align="edge",
                   color=[STATUS_COLOURS[b] for b in band], edgecolor="white", linewidth=0.3)
            for x, lab, side in ((margin_call, f"margin call {margin_call:g}", -1),
                                 (liquidation, f"liquidation {liquidation:g}", 1)):
                ax.axvline(x, color="#444444", lw=0.9, ls="--")
                ax.annotate(lab, (x, 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                            ha="right" if side < 0 else "left", fontsize=8, color="#444444",
                            xytext=(2 * side, -3), textcoords="offset points")
            if log:
                ax.set_xscale("log")
            ax.set_xlim(edges[0], edges[-1])
            nz = hist[hist > 0]
            if nz.size and nz.max() > 50 * nz.min():
                ax.set_yscale("log")
                ax.set_ylim(0.7, nz.max() * 1.6)
                _money_axis(ax)
        else:
            ax.text(0.5, 0.5, "no account with a finite, positive margin ratio", ha="center", va="center",
                    transform=ax.transAxes, color="#666666")
        ax.set_xlabel("margin ratio = maintenance margin / equity" + (" (log scale)" if finite.size and log else ""))
        ax.set_ylabel("accounts")
        note = f"{fmt(finite.size)} accounts with open cross positions"
        if n_flat:
            note += f"; {fmt(n_flat)} with none (ratio 0) not shown"
        if counts["bankrupt"]:
            note += f"; {fmt(counts['bankrupt'])} bankrupt (ratio +∞) at right"
        ax.set_title("Margin ratio across accounts", loc="left", pad=17)
        ax.text(0, 1.015, note, transform=ax.transAxes, fontsize=8, color="#555555", va="bottom", ha="left")
        # Accounts per status, bankrupt (ratio +inf) included.
        labels = [STATUS_LABELS[s] for s in STATUSES]
        vals = [counts[s] for s in STATUSES]
        y = np.arange(len(STATUSES))[::-1]
        axb.barh(y, vals, color=[STATUS_COLOURS[s] for s in STATUSES], height=0.62)
        axb.set_yticks(y, labels)
        axb.set_xscale("symlog", linthresh=1)
        top = max(vals + [1]) * 8
        axb.set_xlim(0, top)
        decades = int(math.floor(math.log10(top)))
        step = max(1, math.ceil((decades + 1) / 4))
        axb.set_xticks([0] + [10 ** k for k in range(0, decades + 1, step)],
                       ["0"] + [_compact(10 ** k) for k in range(0, decades + 1, step)])
        axb.minorticks_off()
        for yi, v in zip(y, vals):
            axb.text(v if v > 0 else 0, yi, f" {fmt(v)}", va="center", fontsize=8.5)
        axb.set_xlabel("accounts (log scale)")
        axb.set_title("Accounts per status", loc="left")
        axb.grid(axis="y", visible=False)
        return _png(fig)


MAX_PORTFOLIO_POINTS = 20_000  # accounts drawn in the portfolio-vs-tiered scatter (sampled evenly)


def portfolio_rows(accounts: pl.DataFrame) -> pl.DataFrame:
    """The accounts in portfolio mode with both requirements (empty without portfolio columns)."""
    if "margin_model" not in accounts.columns:
        return accounts.clear()
    return accounts.filter((_str(accounts["margin_model"]) == "portfolio") & pl.col("portfolio_margin").is_not_null())


def fig_portfolio_vs_tiered(accounts: pl.DataFrame) -> str | None:
    """Per portfolio account, its portfolio requirement against the tiered requirement of the same
    cross positions (log-log, the diagonal marks equality), and the distribution of their ratio."""
    pf = portfolio_rows(accounts).filter((pl.col("portfolio_margin") > 0) | (pl.col("tiered_margin") > 0))
    if pf.height == 0:
        return None
    if pf.height > MAX_PORTFOLIO_POINTS:
        pf = pf.gather(np.linspace(0, pf.height - 1, MAX_PORTFOLIO_POINTS).astype(np.int64))
    x = pf["tiered_margin"].to_numpy()
    y = pf["portfolio_margin"].to_numpy()
    with _rc():
        fig, axes = _figure(10.5, 3.8, ncols=2, width_ratios=[1.4, 1])
        ax, axr = axes[0]
        both = (x > 0) & (y > 0)
        lo = float(min(x[both].min(), y[both].min())) if both.any() else 1.0
        hi = float(max(x.max(), y.max()))
        floor = lo / 3
        xs, ys = np.maximum(x, floor), np.maximum(y, floor)
        ax.scatter(xs, ys, s=5, alpha=0.45, color="#3b6fb6", lw=0)
        ax.plot([floor, hi * 1.5], [floor, hi * 1.5], color="#444444", lw=0.9, ls="--")
        ax.annotate("portfolio = tiered", (0.98, 0.93), xycoords="axes fraction", ha="right", fontsize=8,
                    color="#444444")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tiered maintenance margin (same cross positions)")
        ax.set_ylabel("portfolio requirement")
        ax.set_title("Portfolio vs tiered requirement per account", loc="left")
        _money_axis(ax)
        _money_axis(ax, "x")
        ratio = y[both] / x[both]
        if ratio.size:
            edges = np.geomspace(max(ratio.min(), 1e-6) * 0.999, max(ratio.max(), 1e-6) * 1.001, 40)
            hist, _ = np.histogram(ratio, bins=edges)
            axr.bar(edges[:-1], hist, width=np.diff(edges), align="edge", color="#3b6fb6", edgecolor="white", lw=0.3)
            axr.set_xscale("log")
            axr.axvline(1.0, color="#444444", lw=0.9, ls="--")
        axr.set_xlabel("portfolio / tiered (log scale)")
        axr.set_ylabel("accounts")
        axr.set_title("Ratio of the two requirements", loc="left")
        return _png(fig)


def _sample_idx(n: int, lights: np.ndarray, k: int = MAX_QUEUE_POINTS) -> np.ndarray:
    """At most ~k indices spread over 0..n-1, plus the first and last of each run of lights."""
    base = np.linspace(0, n - 1, min(n, k)).astype(np.int64)
    change = np.flatnonzero(np.diff(lights)) + 1
    return np.unique(np.concatenate([base, change, change - 1, [0, n - 1]]))


def _queue_ax(ax, q: pl.DataFrame, side: str, symbol: str):
    n = q.height
    if n == 0:
        ax.text(0.5, 0.5, f"no {side} positions", ha="center", va="center", transform=ax.transAxes,
                color="#666666")
        ax.set_title(f"{symbol} {side}s", loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    size = np.abs(q["size"].to_numpy())
    cum = np.cumsum(size)
    rank = q["adl_rank"].to_numpy()
    lights = q["adl_lights"].to_numpy().astype(np.int64)
    idx = _sample_idx(n, lights)
    x = np.concatenate([[rank[0] - 1], rank[idx]]).astype(float)
    y = np.concatenate([[0.0], cum[idx]])
    li = np.concatenate([[lights[idx[0]]], lights[idx]])
    for level in range(5, 0, -1):
        m = li == level
        if not m.any():
            continue
        m_ext = m | np.concatenate([[False], m[:-1]])  # reach the next point: no gap between levels
        ax.fill_between(x, 0, y, where=m_ext, color=LIGHT_COLOURS[level], alpha=0.85, lw=0, interpolate=False)
    ax.plot(x, y, color="#222222", lw=1.0)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(0, y[-1] * 1.05 if y[-1] > 0 else 1)
    _money_axis(ax)
    _money_axis(ax, "x")
    ax.set_title(f"{symbol} {side}s: {fmt(n)} positions, size {fmt(float(cum[-1]))}", loc="left")
    ax.set_xlabel("ADL rank (1 = deleveraged first)")


def fig_adl_queue(long_q: pl.DataFrame, short_q: pl.DataFrame, symbol: str) -> str:
    """Cumulative size against ADL rank for a symbol's long and short queues, coloured by lights."""
    with _rc():
        fig, axes = _figure(10.5, 2.6, ncols=2)
        _queue_ax(axes[0, 0], long_q, "long", symbol)
        _queue_ax(axes[0, 1], short_q, "short", symbol)
        axes[0, 0].set_ylabel("cumulative size")
        return _png(fig)


def _scenario_axis(stress, base_marks: dict | None):
    """One x value per scenario: the relative shock when every symbol moved by the same
    amount at step 0 and the base marks are known; else the scenario's position in order."""
    scen = stress.summary["scenario"].unique().sort()
    p0 = stress.prices.filter(pl.col("step") == 0) if stress.prices.height else pl.DataFrame()
    if base_marks and p0.height:
        base = pl.DataFrame({"symbol": list(base_marks), "base": [float(v) for v in base_marks.values()]})
        p0 = (p0.with_columns(_str(p0["symbol"]).alias("symbol"))
              .unique(["scenario", "symbol"], keep="first", maintain_order=True)
              .join(base, on="symbol", how="inner")
              .with_columns((pl.col("mark_price") / pl.col("base") - 1).alias("shock")))
        per = p0.group_by("scenario").agg(pl.col("shock").min().alias("lo"), pl.col("shock").max().alias("hi"))
        if per.height == scen.len() and bool(((per["hi"] - per["lo"]).abs() <= 1e-9).all()):
            x = per.with_columns(((pl.col("lo") + pl.col("hi")) / 2).round(9).alias("x")).select("scenario", "x")
            return x, "shock at step 0 (relative move of every mark)", True
    x = pl.DataFrame({"scenario": scen, "x": np.arange(scen.len(), dtype=float)})
    return x, "scenario", False


def fig_stress_curve(stress, base_marks: dict | None) -> tuple[str | None, bool]:
    s = stress.summary
    if s.height == 0:
        return None, False
    xs, xlabel, is_shock = _scenario_axis(stress, base_marks)
    df = s.with_columns(_str(s["policy"]).alias("policy")).join(xs, on="scenario", how="left").sort("x")
    policies = _policies(stress)
    colours = _policy_colours(policies)
    panels = [("deficit", "deficit (bankrupt equity below zero)"), ("insurance_used", "insurance fund used"),
              ("insurance_left", "insurance fund left"), ("socialized_loss", "socialized loss (ADL / haircuts)"),
              ("notional_liquidated", "notional liquidated"), ("accounts_liquidated", "accounts liquidated")]
    many = df["x"].n_unique() > 60
    with _rc():
        fig, axes = _figure(10.5, 5.6, ncols=3, nrows=2, sharex=True)
        for ax, (col, title) in zip(axes.ravel(), panels):
            for p in policies:
                d = df.filter(pl.col("policy") == p)
                ax.plot(d["x"].to_numpy(), d[col].to_numpy(), color=colours[p],
                        lw=1.6, marker=None if many else "o", ms=3.5, label=p, alpha=0.9)
            ax.set_title(title, loc="left")
            _money_axis(ax)
            if is_shock:
                _percent_axis(ax, "x")
                ax.axvline(0, color="#999999", lw=0.8)
            ax.axhline(0, color="#999999", lw=0.8)
        fig.supxlabel(xlabel, fontsize=9.5)
        axes[0, 0].legend(title="ADL policy", loc="best")
        if not is_shock:
            labels = df.select("scenario", "x").unique().sort("x")
            if labels.height <= 25:
                for ax in axes[1]:
                    ax.set_xticks(labels["x"].to_numpy(), [str(v) for v in labels["scenario"].to_list()],
                                  rotation=45 if labels.height > 10 else 0)
        return _png(fig), is_shock


def _worst(stress) -> dict | None:
    s = stress.summary
    if s.height == 0:
        return None
    w = s.with_columns(_str(s["policy"]).alias("policy")) \
        .sort(["deficit", "notional_liquidated"], descending=True).row(0, named=True)
    if w["deficit"] <= 0 and w["notional_liquidated"] <= 0:
        return None
    return w


def _liq_per_round(stress, scenario) -> pl.DataFrame:
    liq = stress.liquidations
    order = _policies(stress)
    if liq.height == 0:
        return pl.DataFrame({"policy": [], "round": [], "positions": [], "accounts": [], "notional": []},
                            schema={"policy": pl.String, "round": pl.Int64, "positions": pl.UInt32,
                                    "accounts": pl.UInt32, "notional": pl.Float64})
    return (liq.filter(pl.col("scenario") == scenario)
            .with_columns(pl.col("policy").cast(pl.String),
                          (pl.col("step") + 1).alias("round"))
            .group_by("policy", "round", maintain_order=True)
            .agg(pl.len().alias("positions"), pl.col("account_id").n_unique().alias("accounts"),
                 (pl.col("qty") * pl.col("price")).sum().alias("notional"))
            .sort(pl.col("policy").replace_strict(order, list(range(len(order))), default=len(order),
                                                  return_dtype=pl.Int64), "round"))


def fig_cascade(stress, worst: dict, base_marks: dict | None, max_symbols: int,
                symbol_order: list[str] | None) -> str | None:
    """Mark paths per symbol through the cascade rounds of the worst scenario, and the notional
    liquidated per round under each policy."""
    scenario, policy = worst["scenario"], worst["policy"]
    pr = stress.prices
    if pr.height == 0:
        return None
    pr = pr.with_columns(_str(pr["policy"]).alias("policy"), _str(pr["symbol"]).alias("symbol")) \
        .filter((pl.col("scenario") == scenario) & (pl.col("policy") == policy)).sort("symbol", "step")
    if pr.height == 0:
        return None
    first = pr.filter(pl.col("step") == 0).select("symbol", pl.col("mark_price").alias("p0"))
    if base_marks:
        ref = pl.DataFrame({"symbol": list(base_marks), "ref": [float(v) for v in base_marks.values()]})
        ref_label = "mark vs base mark"
    else:
        ref = first.rename({"p0": "ref"})
        ref_label = "mark vs step 0"
    pr = pr.join(ref, on="symbol", how="inner").with_columns((pl.col("mark_price") / pl.col("ref") - 1).alias("move"))
    symbols = pr["symbol"].unique(maintain_order=True).to_list()
    if symbol_order:
        rank = {s: i for i, s in enumerate(symbol_order)}
        symbols.sort(key=lambda s: rank.get(s, len(rank)))
    else:
        final = pr.group_by("symbol").agg(pl.col("move").last().abs().alias("m")).sort("m", descending=True)
        symbols = final["symbol"].to_list()
    shown = symbols[:max_symbols]
    per_round = _liq_per_round(stress, scenario)
    from matplotlib.ticker import MaxNLocator

    with _rc():
        fig, axes = _figure(10.5, 3.5, ncols=2, width_ratios=[1.15, 1])
        ax, axl = axes[0]
        for k, sym in enumerate(shown):
            d = pr.filter(pl.col("symbol") == sym)
            ax.plot(d["step"].to_numpy(), d["move"].to_numpy(), marker="o", ms=3, lw=1.4,
                    color=SYMBOL_COLOURS[k % len(SYMBOL_COLOURS)], label=sym)
        _percent_axis(ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("cascade round (0 = the shock alone)")
        ax.set_ylabel(ref_label)
        more = f" ({len(shown)} of {len(symbols)} symbols)" if len(shown) < len(symbols) else ""
        ax.set_title(f"Mark paths, scenario {scenario}, {policy}{more}", loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.02), fontsize=7.5, handlelength=1.5)
        policies = _policies(stress)
        colours = _policy_colours(policies)
        if per_round.height:
            rounds = np.arange(1, int(per_round["round"].max()) + 1)
            width = 0.8 / max(1, len(policies))
            for k, p in enumerate(policies):
                d = per_round.filter(pl.col("policy") == p)
                v = dict(zip(d["round"].to_list(), d["notional"].to_list()))
                axl.bar(rounds - 0.4 + width * (k + 0.5), [v.get(int(r), 0.0) for r in rounds], width=width,
                        color=colours[p], label=p)
            axl.set_xticks(rounds)
            axl.set_ylim(0, float(per_round["notional"].max()) * 1.3 or 1.0)
            axl.legend(title="ADL policy", loc="upper center", ncols=len(policies))
        else:
            axl.text(0.5, 0.5, "nothing liquidated", ha="center", va="center", transform=axl.transAxes)
        _money_axis(axl)
        axl.set_xlabel("cascade round")
        axl.set_ylabel("notional liquidated (qty × price)")
        axl.set_title(f"Liquidated notional per round, scenario {scenario}", loc="left")
        return _png(fig)


# ------------------------------------------------------------------ HTML


CSS = """
:root { --fg:#1d2530; --muted:#5b6675; --line:#e3e7ed; --bg:#f6f8fa; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:#14202e; color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header p { margin:0; color:#b8c4d2; font-size:13px; }
nav { padding:10px 32px; background:#fff; border-bottom:1px solid var(--line); font-size:13px; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; }
main { max-width:1240px; margin:0 auto; padding:20px 32px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 22px; margin:18px 0; }
h2 { margin:0 0 4px; font-size:18px; }
h3 { margin:18px 0 6px; font-size:15px; }
p.lead { margin:0 0 12px; color:var(--muted); max-width:980px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(210px, 1fr)); gap:12px; margin:6px 0 0; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:22px; font-weight:600; margin:2px 0; font-variant-numeric:tabular-nums; }
.card .d { color:var(--muted); font-size:12px; }
img.plot { display:block; max-width:100%; height:auto; margin:10px 0; }
table { border-collapse:collapse; font-size:12.5px; font-variant-numeric:tabular-nums; margin:6px 0 4px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { text-align:left; background:#f0f3f7; font-weight:600; color:#334; }
td.n, th.n { text-align:right; }
tbody tr:nth-child(even) td { background:#fafbfc; }
.pair { display:flex; flex-wrap:wrap; gap:28px; }
.pair > div { flex:1 1 460px; min-width:0; overflow-x:auto; }
.pair h4 { margin:4px 0; font-size:13px; color:var(--muted); font-weight:600; }
.symbol { border-top:1px solid var(--line); padding-top:8px; margin-top:14px; }
.dot { display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:2px; background:#dde2e8; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; color:#fff; font-size:11.5px; }
.note { color:var(--muted); font-size:12.5px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px 0 30px; }
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _cell(col: str, v) -> str:
    if col == "lights" and v is not None:
        k = int(v)
        dots = "".join(f'<span class="dot" style="background:{LIGHT_COLOURS[k] if i < k else "#dde2e8"}"></span>'
                       for i in range(5))
        return f'<td title="{k} of 5">{dots}</td>'
    if col == "status" and v is not None and str(v) in STATUS_COLOURS:
        colour, label = STATUS_COLOURS[str(v)], STATUS_LABELS[str(v)]
        return f'<td><span class="badge" style="background:{colour}">{_e(label)}</span></td>'
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        if col in ("scenario", "account_id", "rank", "round") and isinstance(v, (int, np.integer)):
            return f'<td class="n">{int(v)}</td>'
        if col in ("shock", "max_haircut_share", "share"):
            return f'<td class="n">{_pct(float(v)) if col == "shock" else f"{float(v) * 100:.1f}%"}</td>'
        if col in ("adl_score", "margin_ratio"):
            return f'<td class="n">{fmt(v, 4, small=True)}</td>'
        if col in ("size", "qty", "price", "mark_price"):
            return f'<td class="n">{fmt(v, 2, small=True)}</td>'
        return f'<td class="n">{fmt(v)}</td>'
    return f"<td>{_e('–' if v is None else v)}</td>"


def table_html(df: pl.DataFrame, empty: str = "nothing to show", headers: dict | None = None) -> str:
    """An HTML table with a header row and one row per frame row; a note when the frame is empty."""
    if df.height == 0:
        return f'<p class="note">{_e(empty)}</p>'
    headers = headers or {}
    numeric = {c for c, t in df.schema.items() if t.is_numeric()} - {"lights"}
    head = "".join(f'<th class="{"n" if c in numeric else ""}">{_e(headers.get(c, c.replace("_", " ")))}</th>'
                   for c in df.columns)
    body = "\n".join("<tr>" + "".join(_cell(c, v) for c, v in zip(df.columns, row)) + "</tr>"
                     for row in df.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _img(b64: str | None, name: str, alt: str) -> str:
    if not b64:
        return ""
    return f'<img class="plot" data-plot="{_e(name)}" alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _cards(rows) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div><div class="d">{_e(d)}</div></div>'
        for k, v, d in rows) + "</div>"


def _risk_sections(risk, max_symbols: int, queue_top: int) -> tuple[list[str], list[str]]:
    acc, pos = risk.accounts, risk.positions
    mc, lq, _ = _venue_levels(risk)
    out, nav = [], []
    # Margin ratio distribution and the status table.
    summ = (acc.group_by(_str(acc["status"]).alias("status"))
            .agg(pl.len().alias("accounts"), pl.col("equity").sum(), pl.col("maint_margin").sum(),
                 pl.col("upnl").sum()))
    summ = pl.DataFrame({"status": list(STATUSES)}).join(summ, on="status", how="left").fill_null(0)
    summ = summ.with_columns((pl.col("accounts") / max(acc.height, 1)).alias("share")).select(
        "status", "accounts", "share", "equity", "maint_margin", "upnl")
    q = acc.filter(pl.col("margin_ratio").is_finite() & (pl.col("margin_ratio") > 0))["margin_ratio"]
    pct = pl.DataFrame({"percentile": ["median", "90th", "99th", "99.9th", "largest finite"],
                        "margin_ratio": [q.quantile(p, "nearest") if q.len() else None
                                         for p in (0.5, 0.9, 0.99, 0.999)] + [q.max() if q.len() else None]})
    nav.append(("margin", "Margin ratios"))
    out.append(f"""<section id="margin"><h2>Margin ratios</h2>
<p class="lead">Every account's margin ratio (maintenance margin / equity over its cross positions) against the
status bands: healthy below {mc:g}, margin call from {mc:g}, liquidatable from {lq:g}; bankrupt accounts
(equity ≤ 0, ratio +∞) are counted on the right.</p>
{_img(fig_margin_ratio(acc, mc, lq), "margin-ratio", "Histogram of account margin ratios with status bands")}
<div class="pair"><div><h4>Accounts per status</h4>{table_html(summ)}</div>
<div><h4>Margin ratio percentiles (accounts with cross positions)</h4>{table_html(pct.drop_nulls())}</div></div>
</section>""")
    pf = portfolio_rows(acc)
    if pf.height:
        lower = int((pf["portfolio_margin"] < pf["tiered_margin"]).sum())
        stats = pf.select(pl.len().alias("portfolio accounts"),
                          pl.col("portfolio_margin").sum().alias("portfolio requirement"),
                          pl.col("tiered_margin").sum().alias("tiered requirement"),
                          pl.col("offset_contingency").sum().alias("offset contingency"),
                          pl.col("liquidity_contingency").sum().alias("liquidity contingency"))
        nav.append(("portfolio", "Portfolio margin"))
        out.append(f"""<section id="portfolio"><h2>Portfolio margin</h2>
<p class="lead">Accounts in portfolio mode: the requirement is the largest loss of the cross positions over
each risk group's grid of price moves plus the contingencies; the tiered maintenance margin of the same
positions is shown beside it. {fmt(lower)} of {fmt(pf.height)} portfolio accounts need less than under
tiers (below the diagonal).</p>
{_img(fig_portfolio_vs_tiered(acc), "portfolio-vs-tiered", "Portfolio requirement against tiered requirement per account")}
{table_html(stats)}
</section>""")
    # ADL queues per symbol, largest open interest first.
    if pos.height:
        pos = pos.with_columns(_str(pos["symbol"]).alias("symbol"), _str(pos["side"]).alias("side"))
        by_sym = pos.group_by("symbol").agg(pl.col("notional").sum()).sort("notional", descending=True)
        symbols = by_sym["symbol"].to_list()
        shown = symbols[:max_symbols]
        cols = ["account_id", "size", "upnl", "adl_score", "adl_rank", "adl_lights"]
        sub = pos.filter(pl.col("symbol").is_in(shown)).select("symbol", "side", *cols)
        parts = sub.partition_by(["symbol", "side"], as_dict=True)
        more = (f" Showing the {len(shown)} symbols with the largest notional of {len(symbols)}."
                if len(shown) < len(symbols) else "")
        blocks = []
        for sym in shown:
            lq_ = parts.get((sym, "long"), sub.clear()).sort("adl_rank")
            sq_ = parts.get((sym, "short"), sub.clear()).sort("adl_rank")
            img = _img(fig_adl_queue(lq_, sq_, sym), f"adl-{sym}", f"ADL queues of {sym}")
            tabs = []
            for side, qd in (("long", lq_), ("short", sq_)):
                top = qd.head(queue_top).select(cols).rename({"adl_rank": "rank", "adl_lights": "lights"})
                tabs.append(f"<div><h4>Front of the {side} queue</h4>"
                            f"{table_html(top, f'no {side} positions in {sym}')}</div>")
            blocks.append(f'<div class="symbol" id="adl-{_e(sym)}"><h3>{_e(sym)}</h3>{img}'
                          f'<div class="pair">{"".join(tabs)}</div></div>')
        legend = ", ".join(f'<span class="dot" style="background:{LIGHT_COLOURS[k]}"></span>{k}'
                           + (" (front)" if k == 5 else " (back)" if k == 1 else "") for k in range(5, 0, -1))
        nav.append(("adl", "ADL queues"))
        out.append(f"""<section id="adl"><h2>ADL queues</h2>
<p class="lead">Per symbol and side, the cumulative size of the queue against ADL rank: rank 1 is the first
position deleveraged when a bankrupt position on the other side is not covered by the insurance fund.
Colours are the indicator lights: {legend}. Curves are sampled to at most
{MAX_QUEUE_POINTS:,} points per queue.{more}</p>
{"".join(blocks)}</section>""")
    return out, nav


def _stress_sections(stress, base_marks, max_symbols: int, symbol_order) -> tuple[list[str], list[str]]:
    out, nav = [], []
    s = stress.summary
    if s.height == 0:
        return out, nav
    curve, is_shock = fig_stress_curve(stress, base_marks)
    xs, _, _ = _scenario_axis(stress, base_marks)
    worst_tab = (s.with_columns(_str(s["policy"]).alias("policy"))
                 .sort(["deficit", "notional_liquidated"], descending=True).head(10))
    if is_shock:
        worst_tab = worst_tab.join(xs.rename({"x": "shock"}), on="scenario", how="left")
    keep = ["scenario"] + (["shock"] if is_shock else []) + [
        "policy", "steps", "accounts_liquidated", "notional_liquidated", "deficit", "insurance_used",
        "insurance_left", "socialized_loss", "adl_accounts"]
    worst_tab = worst_tab.select([c for c in keep if c in worst_tab.columns])
    axis_note = ("The x axis is the shock applied to every mark at step 0."
                 if is_shock else "The x axis is the scenario (shocks differ by symbol, or the base marks "
                                  "are unknown).")
    nav.append(("stress", "Stress curve"))
    out.append(f"""<section id="stress"><h2>Stress curve</h2>
<p class="lead">Per scenario and ADL policy: the deficit of bankrupt accounts, how much of it the insurance
fund paid and what is left of the fund, and what was socialized on the other side (ADL or haircuts).
{axis_note}</p>
{_img(curve, "stress-curve", "Deficit, insurance fund and socialized loss against shock, per ADL policy")}
<h3>Worst scenarios by deficit</h3>{table_html(worst_tab)}</section>""")
    worst = _worst(stress)
    nav.append(("cascade", "Cascade"))
    if worst is None:
        out.append('<section id="cascade"><h2>Cascade</h2><p class="note">No scenario liquidated anyone: '
                   'there is no cascade to show.</p></section>')
    else:
        per_round = _liq_per_round(stress, worst["scenario"])
        img = fig_cascade(stress, worst, base_marks, max_symbols, symbol_order)
        out.append(f"""<section id="cascade"><h2>Cascade: scenario {_e(worst["scenario"])}</h2>
<p class="lead">The scenario with the largest deficit ({_e(fmt(worst["deficit"]))} under {_e(worst["policy"])}).
Round 0 is the shock alone; in each later round the liquidations of that round are sold into the market
and move the marks, which may liquidate more accounts.</p>
{_img(img, "cascade", "Mark price paths and liquidated notional per cascade round")}
<h3>Liquidations per round</h3>{table_html(per_round, "nothing liquidated in this scenario")}</section>""")
    comp = stress.policy_comparison()
    if comp.height:
        comp = comp.with_columns(_str(comp["policy"]).alias("policy"))
        nav.append(("policies", "Policy comparison"))
        out.append(f"""<section id="policies"><h2>Policy comparison</h2>
<p class="lead">Over all scenarios, per ADL policy: total deficit, insurance fund used, loss socialized,
accounts hit (summed over scenarios), overshoot and the largest share of one scenario's socialized loss
borne by a single account.</p>{table_html(comp)}</section>""")
    return out, nav


def write_report(path: str | Path, risk=None, stress=None, title: str = "gpurisk report", *,
                 base_marks: dict | None = None, max_symbols: int = 12, queue_top: int = 5) -> Path:
    """Write one self-contained HTML page (tables, and PNG plots embedded as data URIs).

    risk: a :class:`~gpurisk.engine.Risk` or :class:`RiskTables` (``load_risk_tables``):
        margin-ratio distribution with the status bands, and per symbol the long and short ADL
        queues with the front of each queue as a table.
    stress: a :class:`~gpurisk.stress.StressResult` or :class:`StressTables`
        (``load_stress_tables``): the stress curve (deficit, insurance fund used and left,
        socialized loss against shock, one line per policy), the cascade of the worst scenario
        (mark paths and liquidated notional per round) and the policy comparison.
    base_marks: {symbol: price} the stress shocks were applied to. Default: the stress tables'
        own (``base_marks.parquet``), else the marks of ``risk``; without any, scenarios are
        plotted by id.
    max_symbols: symbols shown (largest notional first); queue_top: rows per queue table.
    """
    if risk is None and stress is None:
        raise ValueError("write_report needs risk results, stress results or both")
    if risk is not None and "asset" in risk.accounts.columns and risk.accounts["asset"].n_unique() > 1:
        # its headline and status tables add money across accounts
        raise ValueError("the report sums money across accounts, and these results hold wallets in several "
                         f"assets ({', '.join(map(str, risk.accounts['asset'].unique().sort().to_list()))}: "
                         "inverse contracts); report one asset's rows at a time, e.g. filtered RiskTables")
    if stress_assets(stress):  # its curves and tables add money across scenarios' rows
        raise ValueError(f"the report plots money, and these stress results hold several settle assets "
                         f"({', '.join(stress_assets(stress))}): report one asset at a time "
                         "(gpurisk report --asset ASSET, or gpurisk.report.select_asset)")
    path = Path(path)
    if base_marks is None and stress is not None:
        base_marks = getattr(stress, "base_marks", None)
        if base_marks is None and risk is not None and risk.positions.height:
            m = risk.positions.group_by(_str(risk.positions["symbol"]).alias("symbol")).agg(
                pl.col("mark_price").first())
            base_marks = dict(zip(m["symbol"].to_list(), m["mark_price"].to_list()))
    sections, nav = [], []
    symbol_order = None
    if risk is not None:
        sec, nv = _risk_sections(risk, max_symbols, queue_top)
        sections += sec
        nav += nv
        if risk.positions.height:
            symbol_order = (risk.positions.group_by(_str(risk.positions["symbol"]).alias("symbol"))
                            .agg(pl.col("notional").sum()).sort("notional", descending=True)["symbol"].to_list())
    if stress is not None:
        sec, nv = _stress_sections(stress, base_marks, max_symbols, symbol_order)
        sections += sec
        nav += nv
    _, _, venue = _venue_levels(risk) if risk is not None else (0, 0, None)
    sub = []
    if risk is not None:
        sub.append(f"{fmt(risk.accounts.height)} accounts, {fmt(risk.positions.height)} positions")
        if venue:
            sub.append(f"venue {venue}")
        be = getattr(risk, "backend", None)
        if be is not None and getattr(be, "name", None):
            sub.append(f"backend {be.name}")
    if stress is not None and stress.summary.height:
        sub.append(f"{fmt(stress.summary['scenario'].n_unique())} stress scenarios")
    if stress is None:
        sub.append("no stress results (run `gpurisk stress --out DIR`, then `gpurisk report RESULTS --stress DIR`)")
    from . import __version__

    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<header><h1>{_e(title)}</h1><p>{_e(" · ".join(sub))}</p></header>
<nav>{"".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in [("headline", "Headline")] + nav)}</nav>
<main>
<section id="headline"><h2>Headline</h2>{_cards(headline(risk, stress))}</section>
{"".join(sections)}
</main>
<footer>gpurisk {_e(__version__)} · generated {_e(when)}</footer>
</body></html>
"""
    from .output import atomic_file

    with atomic_file(path) as tmp:  # a reader never sees half a page
        tmp.write_text(page, encoding="utf-8")
    return path
