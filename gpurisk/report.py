"""Reports people would rather look at: one self-contained HTML page with plots and tables,
and a few headline numbers for the terminal.

``write_report(path, risk=..., stress=...)`` takes a :class:`~gpurisk.risk.Risk` and/or a
:class:`~gpurisk.stress.StressResult`, or the same tables read back from the Parquet files
that ``Risk.write`` and ``StressResult.write`` produce (:func:`load_risk_tables`,
:func:`load_stress_tables`). Plots are PNGs drawn with Matplotlib's Agg renderer (no
display, no global pyplot state) and embedded as base64 data URIs, so the page is one file
that opens anywhere and can be mailed around.

Every plot aggregates before it draws (histogram bins, queue curves sampled to a few
thousand points, sums per step), so a book of millions of positions gives the same small,
readable page as a toy one.

This module is the page; what it is built from lives beside it and is re-exported here:
:mod:`gpurisk.report_tables` (loading result tables, ``fmt``, the headline) and
:mod:`gpurisk.report_figures` (the Matplotlib figures).
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path

import numpy as np
import polars as pl

# Re-exported: ``gpurisk.report`` keeps every name it had before the split.
from .report_figures import (  # noqa: F401
    DPI, LIGHT_COLOURS, MAX_PORTFOLIO_POINTS, MAX_QUEUE_POINTS, POLICY_COLOURS, STATUS_COLOURS, STATUS_LABELS,
    SYMBOL_COLOURS, _liq_per_round, _scenario_axis, _worst, fig_adl_queue, fig_cascade, fig_margin_ratio,
    fig_portfolio_vs_tiered, fig_stress_curve, portfolio_rows)
from .report_tables import (  # noqa: F401
    STATUSES, STRESS_TABLES, RiskTables, StressTables, _pct, _str, _venue_levels, fmt, format_headline, headline,
    load_risk_tables, load_stress_tables, select_asset, stress_assets, write_base_marks)


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

    risk: a :class:`~gpurisk.risk.Risk` or :class:`RiskTables` (``load_risk_tables``):
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
