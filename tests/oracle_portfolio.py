"""An independent oracle for risk-based portfolio margin (README "Portfolio margin").

Plain Python, ``decimal`` at the precision of tests/oracle.py, written from the issue and
not from the engine: every position of an account is revalued at every shock of its risk
group's grid (P' = P·(1 + x), P&L = q·(P' − P)·cs), the losses summed per group (groups moving
independently: the worst of each group, summed; jointly: the worst of the sums at one shock),
and the contingencies added: offset_rate × min(long, short) notional and liquidity_rate × the
gross notional above the threshold, per group. Inputs are converted exactly (Decimal(float)).
"""

from __future__ import annotations

from decimal import Decimal, localcontext

from oracle import PREC, dec  # noqa: F401  (same precision and exact conversion)

D0 = Decimal(0)


def grid(price_range: float, shocks: int) -> list[Decimal]:
    """``shocks`` moves evenly spaced over [-price_range, +price_range], exactly."""
    r = dec(price_range)
    return [-r + 2 * r * k / (shocks - 1) for k in range(shocks)]


def _groups(params: list[dict]) -> tuple[dict, dict]:
    """symbol -> group name; group name -> its parameter row."""
    of = {p["symbol"]: p["risk_group"] for p in params}
    per = {}
    for p in params:
        per.setdefault(p["risk_group"], p)
    return of, per


def _loss_by_shock(legs: list[tuple], marks: dict, cs: dict, shocks: list[Decimal]) -> list[Decimal]:
    """Loss (−P&L) of ``legs`` (symbol, size) at each shock, revalued position by position."""
    out = []
    for x in shocks:
        pnl = D0
        for sym, q in legs:
            p = dec(marks[sym])
            pnl += dec(q) * (p * (1 + x) - p) * dec(cs[sym])
        out.append(-pnl)
    return out


def oracle_portfolio(book: dict, params: list[dict], groups_move: str = "independent",
                     im_multiple: float = 1.0) -> dict:
    """Per account id: requirement, loss, worst (list of (group, shock, loss) candidates tied at
    the top within 1e-12 of the scale), offset, liquidity, equity, init, ratio; and per
    (account, symbol) of each isolated position its own requirement. None where the account
    holds a symbol without a group (the engine's nulls)."""
    with localcontext() as ctx:
        ctx.prec = PREC
        marks = {m["symbol"]: m["mark_price"] for m in book["markets"]}
        cs = {m["symbol"]: m.get("contract_size", 1.0) or 1.0 for m in book["markets"]}
        group_of, per = _groups(params)
        out = {}
        for acc in book["accounts"]:
            aid = acc["account_id"]
            mine = [p for p in book["positions"] if p["account_id"] == aid]
            cross = [p for p in mine if p.get("margin_mode", "cross") == "cross"]
            upnl = sum((dec(p["size"]) * (dec(marks[p["symbol"]]) - dec(p["entry_price"])) * dec(cs[p["symbol"]])
                        for p in cross), D0)
            equity = dec(acc["wallet_balance"]) + upnl
            res = {"equity": equity, "n_cross": len(cross), "isolated": {}}
            for p in mine:
                if p.get("margin_mode") == "isolated" and p["symbol"] in group_of:
                    g = per[group_of[p["symbol"]]]
                    losses = _loss_by_shock([(p["symbol"], p["size"])], marks, cs, grid(g["price_range"], g["shocks"]))
                    n = abs(dec(p["size"])) * dec(marks[p["symbol"]]) * dec(cs[p["symbol"]])
                    res["isolated"][p["symbol"]] = max(max(losses), D0) + _liquidity(g, n)
            if any(p["symbol"] not in group_of for p in cross):
                res.update(requirement=None)
                out[aid] = res
                continue
            by_group: dict[str, list] = {}
            for p in cross:
                by_group.setdefault(group_of[p["symbol"]], []).append((p["symbol"], p["size"]))
            scale = sum((abs(dec(p["size"])) * dec(marks[p["symbol"]]) * dec(cs[p["symbol"]]) for p in cross), D0)
            tol = scale * Decimal("1e-12")
            candidates = []  # (loss, group or None, shock)
            if groups_move == "joint" and by_group:
                g0 = next(iter(per.values()))
                shocks = grid(g0["price_range"], g0["shocks"])
                totals = [D0] * len(shocks)
                for name, legs in by_group.items():
                    for k, l in enumerate(_loss_by_shock(legs, marks, cs, shocks)):
                        totals[k] += l
                loss = max(max(totals), D0)
                candidates = [(t, None, shocks[k]) for k, t in enumerate(totals)]
            else:
                loss = D0
                for name, legs in by_group.items():
                    g = per[name]
                    shocks = grid(g["price_range"], g["shocks"])
                    losses = _loss_by_shock(legs, marks, cs, shocks)
                    worst = max(max(losses), D0)
                    loss += worst
                    candidates += [(max(l, D0), name, shocks[k]) for k, l in enumerate(losses)]
            offset = liquidity = D0
            for name, legs in by_group.items():
                g = per[name]
                longs = sum((dec(q) * dec(marks[s]) * dec(cs[s]) for s, q in legs if q > 0), D0)
                shorts = sum((-dec(q) * dec(marks[s]) * dec(cs[s]) for s, q in legs if q < 0), D0)
                offset += dec(g.get("offset_rate", 0.0) or 0.0) * min(longs, shorts)
                liquidity += _liquidity(g, longs + shorts)
            top = max((c[0] for c in candidates), default=None)
            req = loss + offset + liquidity
            res.update(requirement=req, loss=loss, offset=offset, liquidity=liquidity, scale=scale,
                       worst=[c for c in candidates if top is not None and c[0] >= top - tol],
                       init=dec(im_multiple) * req)
            out[aid] = res
        return out


def _liquidity(g: dict, gross: Decimal) -> Decimal:
    t = g.get("liquidity_threshold")
    if t is None:
        return D0
    return dec(g.get("liquidity_rate", 0.0) or 0.0) * max(gross - dec(t), D0)
