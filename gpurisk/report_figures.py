"""The report's figures: Matplotlib PNGs, returned as base64 strings for embedding.

Plots are drawn with Matplotlib's Agg renderer (no display, no global pyplot state). Every
plot aggregates before it draws (histogram bins, queue curves sampled to a few thousand
points, sums per step), so a book of millions of positions gives the same small, readable
figure as a toy one. The page that embeds them is :mod:`gpurisk.report`.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import polars as pl

from .report_tables import STATUSES, _str, fmt

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

