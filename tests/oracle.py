"""An independent oracle for ``gpurisk.revalue`` (DESIGN.md sections 3-5).

Plain Python, ``decimal`` at 50 significant digits, written from the spec and not from
the engine. Every float input is converted exactly (``Decimal(float)``), so the oracle
computes the exact answer for the numbers the engine actually receives.

Besides the values, the oracle carries a forward error bound for every quantity (class
:class:`V`): each arithmetic step that the engine performs in float64 is charged a relative
error ``EPS`` (1e-12, four orders of magnitude above float64's 1.1e-16) of the size of its
operands. The bound is what the comparison tests use as tolerance: it is "1e-12 relative
with an absolute floor of 1e-12 times the natural scale" (for a sum, the sum of the
magnitudes of its terms), and it tells the tests when a discrete output (a status, a tier,
a null, an ADL order) sits so close to a threshold that float64 may legitimately land on
either side.

Entry point: :func:`oracle_revalue`. Helpers for the tests (book strategies, frames, the
engine-vs-oracle comparison) live at the end of the module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, getcontext
from fractions import Fraction

getcontext().prec = 50

D0 = Decimal(0)
D1 = Decimal(1)
INF = Decimal("Infinity")
EPS = Decimal("1e-12")

STATUS_ORDER = ("healthy", "margin_call", "liquidatable", "bankrupt")

# The presets, restated from the brief (not imported from the engine).
PRESETS = {
    "binance": dict(mm_base="mark", adl_score="binance", lights="rank"),
    "bybit": dict(mm_base="entry", adl_score="pnl_leverage", lights="rank"),
    "bitmex": dict(mm_base="entry", adl_score="pnl_leverage", lights="size"),
    "hyperliquid": dict(mm_base="mark", adl_score="hyperliquid", lights="rank"),
    "dydx": dict(mm_base="mark", adl_score="random", lights="rank"),
}
# NOTE: the brief lists bybit with mm_base "entry"; DESIGN.md says "Bybit classic" uses entry.
PRESETS["bybit"]["mm_base"] = "entry"


@dataclass(frozen=True)
class OracleVenue:
    name: str
    mm_base: str = "mark"
    adl_score: str = "binance"
    lights: str = "rank"
    margin_call_ratio: float = 0.8
    liquidation_ratio: float = 1.0


def as_venue(venue) -> OracleVenue:
    if isinstance(venue, str):
        return OracleVenue(venue, **PRESETS[venue])
    if isinstance(venue, OracleVenue):
        return venue
    # a gpurisk.Venue or anything with the same attributes
    return OracleVenue(venue.name, venue.mm_base, venue.adl_score, venue.lights,
                       venue.margin_call_ratio, venue.liquidation_ratio)


# --------------------------------------------------------------------------------------
# Values with an error bound
# --------------------------------------------------------------------------------------

def dec(x) -> Decimal:
    """Exact Decimal of a float / int / str input."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        if math.isinf(x):
            return INF if x > 0 else -INF
        return Decimal(x)  # exact binary value
    return Decimal(x)


class V:
    """A value ``v`` with an absolute error bound ``e`` (of a float64 evaluation of it)."""

    __slots__ = ("v", "e")

    def __init__(self, v, e=D0):
        self.v = dec(v)
        self.e = dec(e)

    @staticmethod
    def of(x) -> "V":
        return x if isinstance(x, V) else V(dec(x))

    def __add__(self, o):
        o = V.of(o)
        return V(self.v + o.v, self.e + o.e + EPS * (abs(self.v) + abs(o.v)))

    __radd__ = __add__

    def __neg__(self):
        return V(-self.v, self.e)

    def __sub__(self, o):
        return self + (-V.of(o))

    def __rsub__(self, o):
        return V.of(o) - self

    def __mul__(self, o):
        o = V.of(o)
        v = self.v * o.v
        return V(v, abs(self.v) * o.e + abs(o.v) * self.e + self.e * o.e + EPS * abs(v))

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = V.of(o)
        v = self.v / o.v
        if abs(o.v) <= o.e:
            return V(v, INF)
        return V(v, (self.e + abs(v) * o.e) / (abs(o.v) - o.e) + EPS * abs(v))

    def __rtruediv__(self, o):
        return V.of(o) / self

    def __abs__(self):
        return V(abs(self.v), self.e)

    def sign_certain(self) -> bool:
        return abs(self.v) > self.e

    def __repr__(self):
        return f"V({self.v:.6g} ± {self.e:.2g})"


def vmax(a: V, b) -> V:
    b = V.of(b)
    return a if a.v >= b.v else V(b.v, b.e)


def spread(main: V, alts: list[V]) -> V:
    """``main`` with its bound widened to cover every alternative (ambiguous branch)."""
    e = main.e
    for a in alts:
        e = max(e, abs(a.v - main.v) + a.e)
    return V(main.v, e)


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------

def _rows(table) -> list[dict]:
    if table is None:
        return []
    if hasattr(table, "to_dicts"):
        return table.to_dicts()
    return [dict(r) for r in table]


@dataclass
class Tier:
    floor: Decimal
    mmr: Decimal
    cum: Decimal
    max_lev: Decimal


def build_tiers(tier_rows) -> dict[str, list[Tier]]:
    by_sym: dict[str, list[dict]] = {}
    for r in tier_rows:
        by_sym.setdefault(r["symbol"], []).append(r)
    out = {}
    for sym, rs in by_sym.items():
        rs = sorted(rs, key=lambda r: dec(r["notional_floor"]))
        given = all(r.get("maint_amount") is not None for r in rs)
        ts, cum, prev_mmr = [], D0, None
        for i, r in enumerate(rs):
            floor, mmr = dec(r["notional_floor"]), dec(r["maint_margin_rate"])
            if given:
                cum = dec(r["maint_amount"])
            elif i == 0:
                cum = D0
            else:
                cum = cum + floor * (mmr - prev_mmr)
            prev_mmr = mmr
            ts.append(Tier(floor, mmr, cum, dec(r["max_leverage"])))
        out[sym] = ts
    return out


def tier_index(tiers: list[Tier], n: Decimal) -> int:
    k = 0
    for i, t in enumerate(tiers):
        if t.floor <= n:
            k = i
    return k


def tier_candidates(tiers: list[Tier], n: V) -> list[int]:
    """Tiers whose notional range meets [n - e, n + e]."""
    lo, hi = n.v - n.e, n.v + n.e
    out = []
    for i, t in enumerate(tiers):
        upper = tiers[i + 1].floor if i + 1 < len(tiers) else INF
        if (t.floor <= hi and lo < upper) or (i == 0 and hi < t.floor):
            out.append(i)
    return out or [tier_index(tiers, n.v)]


# --------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------

@dataclass
class OracleResult:
    accounts: list[dict]
    positions: list[dict]
    venue: OracleVenue
    account_by_id: dict = field(default_factory=dict)
    position_by_key: dict = field(default_factory=dict)


def _status(mm: V, eq: V, has_positions: bool, venue: OracleVenue) -> tuple[str, set]:
    """Exact status and the set of statuses float64 may legitimately produce."""
    if not has_positions:
        return "healthy", {"healthy"}
    mc, lq = dec(venue.margin_call_ratio), dec(venue.liquidation_ratio)

    def classify(ratio):
        if ratio >= lq:
            return "liquidatable"
        if ratio >= mc:
            return "margin_call"
        return "healthy"

    exact = "bankrupt" if eq.v <= 0 else classify(mm.v / eq.v)
    ok = set()
    eq_lo, eq_hi = eq.v - eq.e, eq.v + eq.e
    if eq_lo <= 0:
        ok.add("bankrupt")
    if eq_hi > 0:
        lo_eq = max(eq_lo, eq_hi * Decimal("1e-30"))
        r_lo = max(mm.v - mm.e, D0) / eq_hi
        r_hi = (mm.v + mm.e) / lo_eq
        for s, (a, b) in {"healthy": (-INF, mc), "margin_call": (mc, lq),
                          "liquidatable": (lq, INF)}.items():
            if r_lo < b and r_hi >= a:
                ok.add(s)
    ok.add(exact)
    return exact, ok


def _ratio(mm: V, eq: V, has_positions: bool) -> V:
    if not has_positions:
        return V(D0)
    if eq.v <= 0:
        return V(INF, INF if eq.v + eq.e > 0 else D0)
    if not eq.sign_certain():
        r = mm / eq
        return V(r.v, INF)
    return mm / eq


def lights_from_share(share: Fraction) -> int:
    for lights, bound in ((5, Fraction(1, 5)), (4, Fraction(2, 5)), (3, Fraction(3, 5)),
                          (2, Fraction(4, 5))):
        if share <= bound:
            return lights
    return 1


def queue_lights(queue: list[dict], rule: str) -> list[int]:
    """Lights of the positions of one (symbol, side) queue given in queue order."""
    n = len(queue)
    if rule == "rank":
        return [lights_from_share(Fraction(i + 1, n)) for i in range(n)]
    sizes = [abs(Fraction(float(p["size"]))) for p in queue]
    total = sum(sizes)
    out, cum = [], Fraction(0)
    for s in sizes:
        cum += s
        out.append(lights_from_share(cum / total))
    return out


def queue_lights_ok(queue: list[dict], rule: str, rel=Fraction(1, 10**12)) -> list[set]:
    """As :func:`queue_lights` but the set of lights allowed when the share is within
    ``rel`` of a 20 % boundary (the engine sums sizes in float64)."""
    n = len(queue)
    if rule == "rank":
        return [{x} for x in queue_lights(queue, rule)]
    sizes = [abs(Fraction(float(p["size"]))) for p in queue]
    total = sum(sizes)
    out, cum = [], Fraction(0)
    for s in sizes:
        cum += s
        share = cum / total
        out.append({lights_from_share(share * (1 - rel)), lights_from_share(share),
                    lights_from_share(share * (1 + rel))})
    return out


def oracle_revalue(markets, tiers, accounts, positions, venue="binance", marks=None) -> OracleResult:
    """Revalue a book exactly. Tables: lists of dicts or polars frames with the input
    columns of DESIGN.md section 3. Returns per-account and per-position dicts whose
    numeric values are Decimals (None for null, Decimal('Infinity') for +inf). Each row
    also carries ``_tol`` (field -> error bound), ``_raw`` (pre-null liq/bankruptcy
    prices) and ``_status_ok`` (statuses float64 may produce)."""
    venue = as_venue(venue)
    mk = {}
    for r in _rows(markets):
        cs = r.get("contract_size")
        mk[r["symbol"]] = [dec(r["mark_price"]), dec(1.0 if cs is None else cs)]
    for sym, p in (marks or {}).items():
        mk[sym][0] = dec(float(p))
    tiers_by = build_tiers(_rows(tiers))
    accs = sorted(_rows(accounts), key=lambda r: r["account_id"])
    poss = _rows(positions)

    # ---- per position ----------------------------------------------------------------
    pos = []
    for r in poss:
        sym = r["symbol"]
        P, cs = mk[sym]
        q, E = dec(r["size"]), dec(r["entry_price"])
        mode = r.get("margin_mode") or "cross"
        iso = dec(r.get("isolated_margin") or 0.0)
        lev_in = r.get("leverage")
        ts = tiers_by[sym]
        aq = abs(q)
        N = V(aq) * P * cs
        upnl = V(q) * (V(P) - E) * cs
        Nmm = N if venue.mm_base == "mark" else V(aq) * E * cs

        def mm_at(k, nmm=Nmm, ts=ts):
            return nmm * ts[k].mmr - ts[k].cum

        k_mm = tier_index(ts, Nmm.v)
        MM = spread(mm_at(k_mm), [mm_at(k) for k in tier_candidates(ts, Nmm)])
        k_n = tier_index(ts, N.v)
        if lev_in is not None:
            IM = N / dec(lev_in)
        else:
            IM = spread(N / ts[k_n].max_lev, [N / ts[k].max_lev for k in tier_candidates(ts, N)])
        pos.append(dict(
            account_id=r["account_id"], symbol=sym, margin_mode=mode,
            side="long" if q > 0 else "short", size=q, entry_price=E, mark_price=P,
            _q=q, _cs=cs, _iso=iso, _tiers=ts, _N=N, _upnl=upnl, _MM=MM, _IM=IM,
            _k_mm=k_mm, _k_n=k_n,
        ))
    pos.sort(key=lambda p: (p["account_id"], p["symbol"], p["margin_mode"] != "cross"))

    by_acc: dict = {}
    for p in pos:
        by_acc.setdefault(p["account_id"], []).append(p)

    # ---- per account -----------------------------------------------------------------
    acc_out = []
    acc_state = {}
    for a in accs:
        aid = a["account_id"]
        W = dec(a["wallet_balance"])
        mine = by_acc.get(aid, [])
        cross = [p for p in mine if p["margin_mode"] == "cross"]
        upnl = V(D0)
        MM = V(D0)
        IM = V(D0)
        for p in cross:
            upnl = upnl + p["_upnl"]
            MM = MM + p["_MM"]
            IM = IM + p["_IM"]
        eq = V(W) + upnl
        avail = eq - IM
        ratio = _ratio(MM, eq, bool(cross))
        status, status_ok = _status(MM, eq, bool(cross), venue)
        row = dict(account_id=aid, wallet_balance=W, upnl=upnl.v, equity=eq.v,
                   maint_margin=MM.v, init_margin=IM.v, margin_ratio=ratio.v,
                   available_balance=avail.v, status=status, n_positions=len(mine))
        row["_tol"] = dict(wallet_balance=D0, upnl=upnl.e, equity=eq.e, maint_margin=MM.e,
                           init_margin=IM.e, margin_ratio=ratio.e, available_balance=avail.e)
        row["_status_ok"] = status_ok
        acc_out.append(row)
        acc_state[aid] = dict(W=W, eq=eq, MM=MM, ratio=ratio, cross=cross, status=status,
                              status_ok=status_ok)

    # ---- liquidation, bankruptcy, ADL score per position -----------------------------
    for p in pos:
        st_ = acc_state[p["account_id"]]
        q, cs, E, P, ts = p["_q"], p["_cs"], p["entry_price"], p["mark_price"], p["_tiers"]
        aq = abs(q)
        sgn = 1 if q > 0 else -1
        if p["margin_mode"] == "cross":
            others = [o for o in st_["cross"] if o is not p]
            Wp = V(st_["W"])
            MMp = V(D0)
            for o in others:
                Wp = Wp + o["_upnl"]
                MMp = MMp + o["_MM"]
            eq, ratio = st_["eq"], st_["ratio"]
            status, status_ok = st_["status"], st_["status_ok"]
            W_score = st_["W"]
        else:
            others = []
            Wp, MMp = V(p["_iso"]), V(D0)
            eq = V(p["_iso"]) + p["_upnl"]
            ratio = _ratio(p["_MM"], eq, True)
            status, status_ok = _status(p["_MM"], eq, True, venue)
            W_score = p["_iso"]
        p["_eq"] = eq

        # liquidation price: equity(P) = MM(P), the others at their marks
        if venue.mm_base == "entry":
            lp = V(E) - (Wp - MMp - p["_MM"]) / (V(q) * cs)
        else:
            lp = None
            for k, t in enumerate(ts):
                num = Wp - MMp + t.cum - V(q) * E * cs
                den = V(aq) * cs * t.mmr - V(q) * cs
                root = num / den
                n_at = aq * root.v * cs
                upper = ts[k + 1].floor if k + 1 < len(ts) else INF
                lower = t.floor if k > 0 else -INF  # tier 1 extended below 0 (null check)
                slack = Decimal("1e-40") * (abs(n_at) + 1)
                if lower - slack <= n_at < upper + slack:
                    lp = root
                    break
        # bankruptcy price
        if p["margin_mode"] == "isolated" or len(st_["cross"]) == 1:
            bp = V(E) - Wp / (V(q) * cs)
        else:
            mm_tot = st_["MM"]
            bp = V(P) - (eq * p["_MM"] / mm_tot) / (V(q) * cs)

        # ADL score
        score = None
        if venue.adl_score == "pnl_leverage":
            pnl = sgn * (V(P) - E) / E
            d = abs(V(P) - bp)
            if d.v == 0:
                lev = V(INF, INF)
                score = V(INF if pnl.v > 0 else D0, INF)
            else:
                lev = (V(aq) * P) / (V(aq) * d)
                score = pnl * lev if pnl.v > 0 else pnl / lev
        elif venue.adl_score == "binance":
            if eq.v <= 0:
                score = V(D0, INF if not eq.sign_certain() else D0)
            else:
                up = vmax(p["_upnl"], V(D0))
                score = up / max(D1, W_score) * ratio
                if not eq.sign_certain():
                    score = V(score.v, INF)
        elif venue.adl_score == "hyperliquid":
            if eq.v <= 0:
                score = V(D0, INF if not eq.sign_certain() else D0)
            else:
                f = V(P) / E if q > 0 else V(E) / P
                score = f * p["_N"] / eq
        # "random": not modelled

        p.update(
            notional=p["_N"].v, upnl=p["_upnl"].v, maint_margin=p["_MM"].v,
            init_margin=p["_IM"].v, margin_ratio=ratio.v, status=status,
            liq_price=(lp.v if lp is not None and lp.v > 0 else None),
            bankruptcy_price=(bp.v if bp.v > 0 else None),
            adl_score=None if score is None else score.v,
        )
        p["_tol"] = dict(size=D0, entry_price=D0, mark_price=D0, notional=p["_N"].e,
                         upnl=p["_upnl"].e, maint_margin=p["_MM"].e, init_margin=p["_IM"].e,
                         margin_ratio=ratio.e,
                         liq_price=INF if lp is None else lp.e, bankruptcy_price=bp.e,
                         adl_score=INF if score is None else score.e)
        p["_raw"] = dict(liq_price=None if lp is None else lp.v, bankruptcy_price=bp.v,
                         liq_tier=None if lp is None or venue.mm_base == "entry"
                         else tier_index(ts, aq * lp.v * cs))
        p["_status_ok"] = status_ok

    # ---- ADL ranks and lights --------------------------------------------------------
    queues: dict = {}
    for p in pos:
        queues.setdefault((p["symbol"], p["side"]), []).append(p)
    for qk, queue in queues.items():
        if venue.adl_score == "random":
            for p in queue:
                p["adl_rank"] = None
                p["adl_lights"] = None
            continue
        queue.sort(key=lambda p: (-p["adl_score"], p["account_id"], p["margin_mode"] != "cross"))
        for i, (p, li) in enumerate(zip(queue, queue_lights(queue, venue.lights))):
            p["adl_rank"] = i + 1
            p["adl_lights"] = li

    pos_out = []
    for p in pos:
        row = {k: v for k, v in p.items() if not k.startswith("_")}
        row["_tol"], row["_raw"], row["_status_ok"] = p["_tol"], p["_raw"], p["_status_ok"]
        row["_eq"] = p["_eq"]
        pos_out.append(row)
    res = OracleResult(acc_out, pos_out, venue)
    res.account_by_id = {r["account_id"]: r for r in acc_out}
    res.position_by_key = {(r["account_id"], r["symbol"], r["margin_mode"]): r for r in pos_out}
    return res
