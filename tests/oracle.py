"""An independent oracle for ``gpurisk.revalue`` (DESIGN.md sections 3-5).

Plain Python, ``decimal`` at 300 significant digits, written from the spec and not from
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
from decimal import Decimal, localcontext
from fractions import Fraction

# Digits of the oracle's arithmetic: enough that sums and products of a few float64 inputs
# (whose exact decimal expansions run to ~70 digits here) are exact.
PREC = 300

D0 = Decimal(0)
D1 = Decimal(1)
INF = Decimal("Infinity")
EPS = Decimal("1e-12")
F64_UNIT = Decimal(2) ** -53  # float64 unit roundoff

STATUS_ORDER = ("healthy", "margin_call", "liquidatable", "bankrupt")

# The presets, restated from the brief (not imported from the engine).
# Issue 14: Binance's current ADL rule (PnL% × effective leverage) and Hyperliquid's text
# (mark/entry for both sides) are the defaults; OKX and Gate restated from their documents.
PRESETS = {
    "binance": dict(mm_base="mark", adl_score="pnl_leverage", lights="rank"),
    "bybit": dict(mm_base="entry", adl_score="pnl_leverage", lights="rank",  # per the brief
                  im_base="entry", available_upnl="losses"),
    "bitmex": dict(mm_base="entry", adl_score="pnl_leverage", lights="size"),
    "hyperliquid": dict(mm_base="mark", adl_score="mark_over_entry", lights="rank"),
    "dydx": dict(mm_base="mark", adl_score="random", lights="rank"),
    "okx": dict(mm_base="mark", adl_score="pnl_leverage", lights="rank", tier_basis="contracts",
                tier_rate="whole", close_fee_rate=0.0005),
    "gate": dict(mm_base="mark", adl_score="pnl_leverage", lights="rank", close_fee_rate=0.00075),
    "binance_adl_2019": dict(mm_base="mark", adl_score="binance", lights="rank"),
    "hyperliquid_side_2025": dict(mm_base="mark", adl_score="hyperliquid", lights="rank"),
}


@dataclass(frozen=True)
class OracleVenue:
    name: str
    mm_base: str = "mark"
    adl_score: str = "binance"
    lights: str = "rank"
    margin_call_ratio: float = 0.8
    liquidation_ratio: float = 1.0
    tier_basis: str = "notional"  # or "contracts": tiers looked up by |q|
    tier_rate: str = "deduction"  # or "whole": the tier's rate on the whole position, no amount
    close_fee_rate: float = 0.0  # taker fee on the mark notional, in the requirement
    im_base: str = "mark"
    available_upnl: str = "equity"  # or "losses", "wallet"
    bankruptcy_fee: bool = False  # closing at the bankruptcy price pays the close fee too (Bybit inverse)


_CONVENTIONS = ("tier_basis", "tier_rate", "close_fee_rate", "im_base", "available_upnl", "bankruptcy_fee")

# Inverse (coin-margined) contracts, restated from the brief: a contract is worth cs in the quote
# currency; notional |q|·cs/P and upnl q·cs·(1/E − 1/P) in the coin; MM and IM on that coin
# notional; an account's wallet is per settle asset, and (account_id, asset) is a margin pool.
DEFAULT_ASSET = "USDT"


def settle_asset_of(row) -> str:
    """The settle asset of a markets row: as given, USDT for linear, else the coin its symbol
    starts with (BTCUSD, XBTUSD, BTCUSD_PERP, BTC-PERPETUAL)."""
    if row.get("settle_asset"):
        return row["settle_asset"]
    if (row.get("contract_type") or "linear") == "linear":
        return DEFAULT_ASSET
    sym = row["symbol"].upper()
    for marker in ("-PERPETUAL", "/USD", "-USD", "_USD", "USD"):
        if marker in sym:
            return sym[:sym.index(marker)]
    raise ValueError(f"no settle asset for {sym}")


def as_venue(venue) -> OracleVenue:
    if isinstance(venue, str):
        return OracleVenue(venue, **PRESETS[venue])
    if isinstance(venue, OracleVenue):
        return venue
    # a gpurisk.Venue or anything with the same attributes
    return OracleVenue(venue.name, venue.mm_base, venue.adl_score, venue.lights,
                       venue.margin_call_ratio, venue.liquidation_ratio,
                       **{c: getattr(venue, c) for c in _CONVENTIONS if hasattr(venue, c)})


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
        if o.v == 0 and o.e == 0:
            return self
        if self.v == 0 and self.e == 0:
            return o
        v = self.v + o.v
        if self.e == 0 and o.e == 0:
            # both exact (inputs): float64 rounds the result once
            return V(v, EPS * abs(v))
        # otherwise charge the operands' size: covers cancellation under any reordering
        return V(v, self.e + o.e + EPS * (abs(self.v) + abs(o.v)))

    __radd__ = __add__

    def __neg__(self):
        return V(self.v.copy_negate(), self.e)

    def __sub__(self, o):
        return self + (-V.of(o))

    def __rsub__(self, o):
        return V.of(o) - self

    def __mul__(self, o):
        o = V.of(o)
        v = self.v * o.v
        if self.e == INF or o.e == INF:
            return V(v, INF)
        return V(v, abs(self.v) * o.e + abs(o.v) * self.e + self.e * o.e + EPS * abs(v))

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = V.of(o)
        v = self.v / o.v
        if abs(o.v) <= o.e or self.e == INF:
            return V(v, INF)
        return V(v, (self.e + abs(v) * o.e) / (abs(o.v) - o.e) + EPS * abs(v))

    def __rtruediv__(self, o):
        return V.of(o) / self

    def __abs__(self):
        return V(self.v.copy_abs(), self.e)

    def sign_certain(self) -> bool:
        return abs(self.v) > self.e


def straddles_zero(x: V) -> bool:
    """Whether float64 may put ``x`` on either side of ``x > 0``."""
    return x.v - x.e <= 0 < x.v + x.e

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
    account_by_pool: dict = field(default_factory=dict)  # (account_id, asset) -> row
    position_by_key: dict = field(default_factory=dict)


def _status(mm: V, eq: V, has_positions: bool, venue: OracleVenue) -> tuple[str, set]:
    """Exact status and the set of statuses float64 may legitimately produce."""
    if not has_positions:
        return "healthy", {"healthy"}
    # thresholds are meant as the decimals they are written as (0.8, not 0.8000000000000000444)
    mc, lq = Decimal(repr(float(venue.margin_call_ratio))), Decimal(repr(float(venue.liquidation_ratio)))

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
        return V(INF, INF if straddles_zero(eq) else D0)
    if straddles_zero(eq):
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
    """Revalue a book exactly (PREC digits). Tables: lists of dicts or polars frames with the input
    columns of DESIGN.md section 3. Returns per-account and per-position dicts whose
    numeric values are Decimals (None for null, Decimal('Infinity') for +inf). Each row
    also carries ``_tol`` (field -> error bound), ``_raw`` (pre-null liq/bankruptcy
    prices) and ``_status_ok`` (statuses float64 may produce)."""
    with localcontext() as ctx:
        ctx.prec = PREC
        return _oracle_revalue(markets, tiers, accounts, positions, venue, marks)


def _oracle_revalue(markets, tiers, accounts, positions, venue, marks) -> OracleResult:
    venue = as_venue(venue)
    mk = {}
    for r in _rows(markets):
        cs = r.get("contract_size")
        mk[r["symbol"]] = [dec(r["mark_price"]), dec(1.0 if cs is None else cs),
                           (r.get("contract_type") or "linear") == "inverse", settle_asset_of(r)]
    for sym, p in (marks or {}).items():
        mk[sym][0] = dec(float(p))
    tiers_by = build_tiers(_rows(tiers))
    accs = sorted(_rows(accounts), key=lambda r: (r["account_id"], r.get("asset") or DEFAULT_ASSET))
    poss = _rows(positions)

    # ---- per position ----------------------------------------------------------------
    pos = []
    for r in poss:
        sym = r["symbol"]
        P, cs, inv, settle = mk[sym]
        q, E = dec(r["size"]), dec(r["entry_price"])
        mode = r.get("margin_mode") or "cross"
        iso = dec(r.get("isolated_margin") or 0.0)
        lev_in = r.get("leverage")
        ts = tiers_by[sym]
        aq = abs(q)
        if inv:  # in the coin
            N = V(aq) * cs / P
            upnl = V(q) * cs * (V(D1) / E - V(D1) / P)
            N_entry = V(aq) * cs / E
        else:
            N = V(aq) * P * cs
            upnl = V(q) * (V(P) - E) * cs
            N_entry = V(aq) * E * cs
        Nmm = N if venue.mm_base == "mark" else N_entry
        whole = venue.tier_rate == "whole"
        by_contracts = venue.tier_basis == "contracts"

        def mm_at(k, nmm=Nmm, ts=ts):
            return nmm * ts[k].mmr - (D0 if whole else ts[k].cum)

        N_im = N if venue.im_base == "mark" else N_entry
        if by_contracts:  # the tier of |q|: exact, no float64 notional near a floor
            k_mm = k_n = tier_index(ts, aq)
            MM = mm_at(k_mm)
            IM = N_im / dec(lev_in) if lev_in is not None else N_im / ts[k_n].max_lev
        else:
            k_mm = tier_index(ts, Nmm.v)
            MM = spread(mm_at(k_mm), [mm_at(k) for k in tier_candidates(ts, Nmm)])
            k_n = tier_index(ts, N.v)
            if lev_in is not None:
                IM = N_im / dec(lev_in)
            else:
                IM = spread(N_im / ts[k_n].max_lev, [N_im / ts[k].max_lev for k in tier_candidates(ts, N)])
        FEE = N * dec(float(venue.close_fee_rate))
        pos.append(dict(
            account_id=r["account_id"], symbol=sym, asset=settle, margin_mode=mode, _inv=inv,
            side="long" if q > 0 else "short", size=q, entry_price=E, mark_price=P,
            _q=q, _cs=cs, _iso=iso, _tiers=ts, _N=N, _upnl=upnl, _MM=MM, _IM=IM, _FEE=FEE,
            _REQ=MM + FEE,
            _k_mm=k_mm, _k_n=k_n,
        ))
    pos.sort(key=lambda p: (p["account_id"], p["asset"], p["symbol"], p["margin_mode"] != "cross"))

    by_acc: dict = {}
    for p in pos:
        by_acc.setdefault((p["account_id"], p["asset"]), []).append(p)

    # ---- per account -----------------------------------------------------------------
    acc_out = []
    acc_state = {}
    for a in accs:
        aid = a["account_id"]
        pool = (aid, a.get("asset") or DEFAULT_ASSET)
        W = dec(a["wallet_balance"])
        mine = by_acc.get(pool, [])
        cross = [p for p in mine if p["margin_mode"] == "cross"]
        upnl = V(D0)
        MM = V(D0)
        IM = V(D0)
        FEE = V(D0)
        for p in cross:
            upnl = upnl + p["_upnl"]
            MM = MM + p["_MM"]
            IM = IM + p["_IM"]
            FEE = FEE + p["_FEE"]
        eq = V(W) + upnl
        if venue.available_upnl == "equity":
            avail = eq - IM
        elif venue.available_upnl == "losses":
            avail = V(W) + (upnl if upnl.v < 0 else V(D0)) - IM
            if straddles_zero(upnl):
                avail = V(avail.v, avail.e + abs(upnl.v) + upnl.e)
        else:
            avail = V(W) - IM
        REQ = MM + FEE
        ratio = _ratio(REQ, eq, bool(cross))
        status, status_ok = _status(REQ, eq, bool(cross), venue)
        row = dict(account_id=aid, asset=pool[1], wallet_balance=W, upnl=upnl.v, equity=eq.v,
                   maint_margin=MM.v, close_fee=FEE.v, init_margin=IM.v, margin_ratio=ratio.v,
                   available_balance=avail.v, status=status, n_positions=len(mine))
        row["_tol"] = dict(wallet_balance=D0, upnl=upnl.e, equity=eq.e, maint_margin=MM.e, close_fee=FEE.e,
                           init_margin=IM.e, margin_ratio=ratio.e, available_balance=avail.e)
        row["_status_ok"] = status_ok
        acc_out.append(row)
        acc_state[pool] = dict(W=W, eq=eq, MM=MM, ratio=ratio, cross=cross, status=status,
                              status_ok=status_ok)

    # ---- liquidation, bankruptcy, ADL score per position -----------------------------
    for p in pos:
        st_ = acc_state[(p["account_id"], p["asset"])]
        q, cs, E, P, ts = p["_q"], p["_cs"], p["entry_price"], p["mark_price"], p["_tiers"]
        aq = abs(q)
        sgn = 1 if q > 0 else -1
        inv = p["_inv"]
        # Inverse: the linear closed forms hold in x = 1/P for size -q and entry 1/E (derived in
        # the README, "Inverse contracts"); qx, Ex, Px are those, and each price is 1/x at the end.
        qx, Ex, Px = (-q, V(D1) / E, V(D1) / P) if inv else (q, V(E), V(P))
        sgx = -sgn if inv else sgn
        if p["margin_mode"] == "cross":
            others = [o for o in st_["cross"] if o is not p]
            Wp = V(st_["W"])
            MMp = V(D0)
            for o in others:
                Wp = Wp + o["_upnl"]
                MMp = MMp + o["_REQ"]
            eq, ratio = st_["eq"], st_["ratio"]
            status, status_ok = st_["status"], st_["status_ok"]
            W_score = st_["W"]
        else:
            others = []
            Wp, MMp = V(p["_iso"]), V(D0)
            eq = V(p["_iso"]) + p["_upnl"]
            ratio = _ratio(p["_REQ"], eq, True)
            status, status_ok = _status(p["_REQ"], eq, True, venue)
            W_score = p["_iso"]
        p["_eq"] = eq

        # liquidation price: equity(P) = MM(P), the others at their marks
        # with the close fee f·|q|·P·cs in the requirement: rate mmr + f in P
        f = dec(float(venue.close_fee_rate))
        if venue.mm_base == "entry":
            # equity(P) = MM' + MM_i + f·|q|·P·cs  =>  P·cs·(q − f·|q|) = MM' + MM_i − W' + q·E·cs
            lp = (MMp + p["_MM"] - Wp + V(qx) * Ex * cs) / (V(cs) * (V(qx) - f * aq))
        elif venue.tier_basis == "contracts":
            t = ts[p["_k_mm"]]
            cum = D0 if venue.tier_rate == "whole" else t.cum
            lp = (Wp - MMp + cum - V(qx) * Ex * cs) / (V(aq) * cs * (t.mmr + f) - V(qx) * cs)
            k = p["_k_mm"]
        else:
            lp = None
            for k, t in enumerate(ts):
                num = Wp - MMp + (D0 if venue.tier_rate == "whole" else t.cum) - V(qx) * Ex * cs
                den = V(aq) * cs * (t.mmr + f) - V(qx) * cs
                root = num / den
                n_at = aq * root.v * cs
                upper = ts[k + 1].floor if k + 1 < len(ts) else INF
                lower = t.floor if k > 0 else -INF  # tier 1 extended below 0 (null check)
                slack = Decimal("1e-40") * (abs(n_at) + 1)
                if lower - slack <= n_at < upper + slack:
                    lp = root
                    break
        if lp is not None and lp.e != INF:
            # gpurisk reports a double within an ulp of the nearest one on the trigger side of the
            # root at which its own float64 status says liquidatable (README, "Liquidation
            # price"), not the rounded
            # root. The errors of W' and MM' are in lp.e already; that status adds the float64
            # rounding of equity - MM evaluated near the root (a few units of 2^-53 of the
            # terms' size), so it may flip that far over |d(equity - MM)/dP| from the exact
            # root. The comparison is widened by exactly that: a few ulps of the price.
            slope = aq * cs * (abs(f - sgx) if venue.mm_base == "entry" else abs(ts[k].mmr + f - sgx))
            size_ = abs(Wp.v) + abs(MMp.v) + 2 * aq * (Ex.v + abs(lp.v)) * cs
            lp = V(lp.v, lp.e + 16 * F64_UNIT * size_ / slope)
        if lp is not None and inv:
            # the root is x = 1/LP; x <= 0: no positive price (a short never liquidated by a rise)
            lp = V(D1) / lp if lp.v > 0 else V(-D1, INF if straddles_zero(lp) else D0)
        # bankruptcy price
        alone = p["margin_mode"] == "isolated" or len(st_["cross"]) == 1
        share = Wp if alone else eq * p["_MM"] / st_["MM"]
        at = Ex if alone else Px
        if venue.bankruptcy_fee and venue.close_fee_rate > 0:
            # closing at B pays the fee f·|q|·B·cs too: q·(B − X)·cs − f·|q|·B·cs = −share
            bp = (V(qx) * at * cs - share) / (V(cs) * (V(qx) - f * aq))
        else:
            bp = at - share / (V(qx) * cs)
        if inv:
            bp = V(D1) / bp if bp.v != 0 else V(INF, INF)

        # ADL score
        score = None
        if venue.adl_score == "pnl_leverage":
            # inverse: in x = 1/P (PnL% of the entry value, leverage of the mark value, in coin)
            bx = (V(D1) / bp if bp.v != 0 else V(INF, INF)) if inv else bp
            pnl = sgx * (Px - Ex) / Ex
            d = abs(Px - bx)
            if pnl.v > 0:
                score = pnl * ((V(aq) * Px) / (V(aq) * d)) if d.v != 0 else V(INF, INF)
            else:
                # pnl / eff_lev, written as pnl * (|q||P - BP|) / (|q| P): the same value,
                # and well conditioned when P - BP ~ 0 (eff_lev -> inf, score -> 0)
                score = pnl * ((V(aq) * d) / (V(aq) * Px))
        elif venue.adl_score == "binance":
            if eq.v <= 0:
                score = V(D0, INF if straddles_zero(eq) else D0)
            else:
                up = vmax(p["_upnl"], V(D0))
                score = up / max(D1, W_score) * ratio
                if straddles_zero(eq):
                    score = V(score.v, INF)
        elif venue.adl_score in ("hyperliquid", "mark_over_entry"):
            if eq.v <= 0:
                score = V(D0, INF if straddles_zero(eq) else D0)
            else:
                pe = V(P) / E if q > 0 or venue.adl_score == "mark_over_entry" else V(E) / P
                score = pe * p["_N"] / eq
        # "random": not modelled

        p.update(
            notional=p["_N"].v, upnl=p["_upnl"].v, maint_margin=p["_MM"].v, close_fee=p["_FEE"].v,
            init_margin=p["_IM"].v, margin_ratio=ratio.v, status=status,
            liq_price=(lp.v if lp is not None and lp.v > 0 else None),
            bankruptcy_price=(bp.v if bp.v > 0 else None),
            adl_score=None if score is None else score.v,
        )
        p["_tol"] = dict(size=D0, entry_price=D0, mark_price=D0, notional=p["_N"].e,
                         upnl=p["_upnl"].e, maint_margin=p["_MM"].e, close_fee=p["_FEE"].e,
                         init_margin=p["_IM"].e,
                         margin_ratio=ratio.e,
                         liq_price=INF if lp is None else lp.e, bankruptcy_price=bp.e,
                         adl_score=INF if score is None else score.e)
        p["_raw"] = dict(liq_price=None if lp is None else lp.v, bankruptcy_price=bp.v,
                         liq_tier=None if lp is None or venue.mm_base == "entry"
                         else (p["_k_mm"] if venue.tier_basis == "contracts"
                               else tier_index(ts, aq * cs / lp.v if inv else aq * lp.v * cs)))
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
    res.account_by_id = {r["account_id"]: r for r in acc_out}  # one row per account: its only wallet
    res.account_by_pool = {(r["account_id"], r["asset"]): r for r in acc_out}
    res.position_by_key = {(r["account_id"], r["symbol"], r["margin_mode"]): r for r in pos_out}
    return res


# ======================================================================================
# Test helpers: books as plain dicts, polars frames, a hypothesis strategy, comparison
# ======================================================================================

_SCHEMAS = {
    "markets": {"symbol": "str", "mark_price": "f64", "contract_size": "f64", "tick_size": "f64",
                "contract_type": "str", "settle_asset": "str"},
    "tiers": {"symbol": "str", "notional_floor": "f64", "maint_margin_rate": "f64",
              "maint_amount": "f64", "max_leverage": "f64"},
    "accounts": {"account_id": "i64", "wallet_balance": "f64", "asset": "str"},
    "positions": {"account_id": "i64", "symbol": "str", "size": "f64", "entry_price": "f64",
                  "margin_mode": "str", "isolated_margin": "f64", "leverage": "f64"},
}


def frames(book: dict) -> dict:
    """polars frames of a book given as {table: [row dicts]}; an optional column is
    written only when some row has the key."""
    import polars as pl

    dt = {"str": pl.Utf8, "f64": pl.Float64, "i64": pl.Int64}
    out = {}
    for name, schema in _SCHEMAS.items():
        rows = book[name]
        cols = [c for c in schema if any(c in r for r in rows)]
        out[name] = pl.DataFrame(
            {c: [r.get(c) for r in rows] for c in cols},
            schema={c: dt[schema[c]] for c in cols},
        )
    return out


def engine_book(book: dict):
    import gpurisk

    return gpurisk.Book.from_frames(**frames(book))


def oracle_of(book: dict, venue="binance", marks=None) -> OracleResult:
    return oracle_revalue(book["markets"], book["tiers"], book["accounts"], book["positions"],
                          venue=venue, marks=marks)


SYMBOL_NAMES = ("BTC", "ETH", "SOL", "DOGE", "XRP", "ADA")


def _float_mm(ladder, n):
    """Approximate (float) mark MM on a ladder of (floor, rate) with derived amounts."""
    cum, prev, mm = 0.0, None, 0.0
    for i, (f, m) in enumerate(ladder):
        if i:
            cum += f * (m - prev)
        prev = m
        if f <= n:
            mm = n * m - cum
    return mm


def book_strategy(max_accounts: int = 6, max_symbols: int = 3, max_tiers: int = 4, inverse: bool = False):
    """Hypothesis strategy of small random books (dicts of row lists). ``inverse``: some markets
    are inverse (coin-margined, settled in their own coin), and accounts hold one wallet per
    asset their positions settle in (plus, at times, an idle USDT wallet)."""
    from hypothesis import strategies as st

    @st.composite
    def books(draw):
        n_sym = draw(st.integers(1, max_symbols))
        names = draw(st.lists(st.sampled_from(SYMBOL_NAMES), min_size=n_sym, max_size=n_sym,
                              unique=True))
        markets, tiers, sym_info, ladders = [], [], {}, {}
        kind = {}
        for s in names:
            cents = draw(st.integers(1, 10_000_000))
            inv = inverse and draw(st.booleans())
            kind[s] = "inverse" if inv else "linear"
            cs = draw(st.sampled_from([1.0, 1.0, 10.0, 100.0] if inv else [1.0, 1.0, 1.0, 0.001, 0.01, 10.0]))
            markets.append(dict(symbol=s, mark_price=cents / 100, contract_size=cs))
            if inverse:
                markets[-1].update(contract_type=kind[s], settle_asset=s if inv else "USDT")
            typical = (cs / (cents / 100) if inv else cents / 100 * cs) * 3
            n_t = draw(st.integers(1, max_tiers))
            mults = draw(st.lists(st.sampled_from([0.01, 0.05, 0.2, 0.5, 1, 2, 5, 20, 100]),
                                  min_size=n_t - 1, max_size=n_t - 1))
            if kind[s] == "inverse":  # coin notionals: floors need not be whole numbers
                floors = [0.0] + sorted({float(f"{typical * m:.3g}") for m in mults if typical * m > 0})
            else:
                floors = [0.0] + sorted({float(max(1, round(typical * m))) for m in mults})
            mmrs = sorted(draw(st.lists(
                st.sampled_from([0.004, 0.005, 0.01, 0.025, 0.05, 0.1, 0.125, 0.15, 0.25, 0.5]),
                min_size=len(floors), max_size=len(floors))))
            levs = sorted(draw(st.lists(st.sampled_from([125.0, 100.0, 50.0, 25.0, 20.0, 10.0,
                                                         5.0, 2.0, 1.0]),
                                        min_size=len(floors), max_size=len(floors))),
                          reverse=True)
            for f, m, lv in zip(floors, mmrs, levs):
                tiers.append(dict(symbol=s, notional_floor=f, maint_margin_rate=m,
                                  max_leverage=lv))
            ladders[s] = list(zip(floors, mmrs))
            sym_info[s] = (cents, cs, min(levs))

        if draw(st.integers(0, 3)) == 0:
            # give maint_amount explicitly (the continuous values, rounded to float64)
            cum, prev = 0.0, None
            for r in tiers:
                if r["notional_floor"] == 0.0:
                    cum = 0.0
                else:
                    cum = cum + r["notional_floor"] * (r["maint_margin_rate"] - prev)
                prev = r["maint_margin_rate"]
                r["maint_amount"] = cum

        n_acc = draw(st.integers(1, max_accounts))
        ids = draw(st.lists(st.integers(0, 10**12), min_size=n_acc, max_size=n_acc, unique=True))
        accounts, positions = [], []
        for aid in ids:
            mine = []
            for s in names:
                cents, cs, min_lev = sym_info[s]
                modes = draw(st.sampled_from([(), (), ("cross",), ("cross",), ("cross",),
                                              ("isolated",), ("cross", "isolated")]))
                for mode in modes:
                    ex = draw(st.integers(0, 5))
                    k = draw(st.integers(1, 10**ex))
                    size = (k if draw(st.booleans()) else -k) / 1000
                    delta = draw(st.sampled_from([0, 1, -1, 3, -3, 10, -10, 25, -25, 45, -45]))
                    e_cents = max(1, cents * (100 + delta) // 100)
                    entry = e_cents / 100
                    row = dict(account_id=aid, symbol=s, size=size, entry_price=entry,
                               margin_mode=mode)
                    if mode == "isolated" and kind[s] == "inverse":
                        frac = draw(st.sampled_from([0.002, 0.01, 0.05, 0.2, 1.0]))
                        row["isolated_margin"] = max(1e-8, float(f"{abs(size) * cs / entry * frac:.4g}"))
                    elif mode == "isolated":
                        frac = draw(st.sampled_from([0.002, 0.01, 0.05, 0.2, 1.0]))
                        row["isolated_margin"] = max(1, round(abs(size) * entry * cs * frac * 100)) / 100
                    else:
                        row["isolated_margin"] = 0.0
                    lev = draw(st.sampled_from([None, None, None, 1.0, 2.0, 3.0, 5.0, 10.0]))
                    row["leverage"] = lev if lev is None or lev <= min_lev else None
                    mine.append(row)
            pools = {"USDT" if kind[r["symbol"]] == "linear" else r["symbol"] for r in mine} or {"USDT"}
            if inverse and draw(st.booleans()):
                pools.add("USDT")  # an idle wallet: an account row with no positions of its own
            for asset in sorted(pools):
                coin = asset != "USDT"
                mine_here = [r for r in mine if ("USDT" if kind[r["symbol"]] == "linear" else r["symbol"]) == asset]
                gross = sum(abs(r["size"]) * sym_info[r["symbol"]][1] * (1 / r["entry_price"] if coin else r["entry_price"])
                            for r in mine_here if r["margin_mode"] == "cross")
                cents_unit = 1e8 if coin else 100  # wallets in satoshi-like units for coins
                if gross > 0 and draw(st.integers(0, 3)) == 0:
                    # equity near maintenance margin (margin call / liquidation boundary region)
                    upnl, mm = 0.0, 0.0
                    for r in mine_here:
                        if r["margin_mode"] == "cross":
                            cents, cs, _ = sym_info[r["symbol"]]
                            p = cents / 100
                            if coin:
                                upnl += r["size"] * cs * (1 / r["entry_price"] - 1 / p)
                                mm += _float_mm(ladders[r["symbol"]], abs(r["size"]) * cs / p)
                            else:
                                upnl += r["size"] * (p - r["entry_price"]) * cs
                                mm += _float_mm(ladders[r["symbol"]], abs(r["size"]) * p * cs)
                    f = draw(st.sampled_from([0.9, 1.0, 1.05, 1.15, 1.25, 1.3]))
                    wallet = max(0.0, round((mm * f - upnl) * cents_unit) / cents_unit)
                elif gross > 0:
                    frac = draw(st.sampled_from([0, 0.002, 0.01, 0.03, 0.1, 0.5, 2.0]))
                    wallet = round(gross * frac * cents_unit) / cents_unit
                else:
                    wallet = draw(st.integers(0, 10**7)) / 100
                if 0 < abs(wallet) < 1e-12:
                    wallet = 0.0
                row = dict(account_id=aid, wallet_balance=wallet)
                if inverse:
                    row["asset"] = asset
                accounts.append(row)
            positions.extend(mine)
        for _ in range(draw(st.integers(0, 2))):
            # a twin account: identical positions and wallet, so exact ADL ties
            src = draw(st.sampled_from(accounts))
            twin = draw(st.integers(0, 10**12).filter(lambda i: i not in ids))
            ids.append(twin)
            accounts.extend(dict(r, account_id=twin) for r in list(accounts) if r["account_id"] == src["account_id"])
            positions.extend(dict(r, account_id=twin) for r in list(positions)
                             if r["account_id"] == src["account_id"])
        if not positions:
            s = names[0]
            cents, cs, _ = sym_info[s]
            positions.append(dict(account_id=ids[0], symbol=s, size=1.0, entry_price=cents / 100,
                                  margin_mode="cross", isolated_margin=0.0, leverage=None))
            asset = s if kind[s] == "inverse" else "USDT"
            if inverse and not any(a["account_id"] == ids[0] and a["asset"] == asset for a in accounts):
                accounts.append(dict(account_id=ids[0], wallet_balance=1.0, asset=asset))
        positions = draw(st.permutations(positions))
        accounts = draw(st.permutations(accounts))
        return dict(markets=markets, tiers=tiers, accounts=list(accounts),
                    positions=list(positions))

    return books()


def _close(name, got, want: Decimal | None, tol: Decimal, strict: bool, errs: list, where):
    if want is None:
        if got is not None:
            errs.append(f"{where} {name}: engine {got!r}, oracle null")
        return
    if got is None:
        errs.append(f"{where} {name}: engine null, oracle {want}")
        return
    if tol == INF:
        if strict:
            errs.append(f"{where} {name}: oracle value {want} is ill-conditioned (strict book)")
        return
    g = dec(float(got))
    if want.is_infinite() or g.is_infinite():
        if g != want:
            errs.append(f"{where} {name}: engine {got!r}, oracle {want}")
        return
    if abs(g - want) > tol:
        errs.append(f"{where} {name}: engine {got!r}, oracle {float(want)!r} "
                    f"(diff {float(abs(g - want)):.3g} > tol {float(tol):.3g})")


def _nullable_price(name, got, row, strict, errs, where):
    """liq_price / bankruptcy_price: null when the raw root is missing or <= 0."""
    raw, tol, want = row["_raw"][name], row["_tol"][name], row[name]
    if got is not None and want is not None:
        _close(name, got, want, tol, strict, errs, where)
        return
    if got is None and want is None:
        return
    if not strict and (raw is None or tol == INF):
        return  # no consistent tier found (discontinuous explicit maint_amount): no claim
    if not strict and abs(raw) <= tol:
        # float64 may land on either side of zero
        if got is None or dec(float(got)) <= raw + tol:
            return
    errs.append(f"{where} {name}: engine {got!r}, oracle {want} (raw {raw})")


ACCOUNT_NUMERIC = ("wallet_balance", "upnl", "equity", "maint_margin", "close_fee", "init_margin",
                   "margin_ratio", "available_balance")
POSITION_NUMERIC = ("size", "entry_price", "mark_price", "notional", "upnl", "maint_margin",
                    "close_fee", "init_margin", "margin_ratio")


def compare(risk, orc: OracleResult, strict: bool = True) -> list[str]:
    """Differences between an engine ``Risk`` and the oracle, as readable strings.

    strict: exact statuses, nulls, ranks and lights, and no ill-conditioned value (for
    hand-built books). Otherwise a discrete output may fall either way where the oracle's
    error bound straddles its threshold (random books)."""
    errs: list[str] = []
    venue = orc.venue
    acc = risk.accounts.to_dicts()
    pos = risk.positions.to_dicts()

    # ---- accounts --------------------------------------------------------------------
    ids = [(r["account_id"], r["asset"]) for r in acc]
    if ids != sorted(orc.account_by_pool):
        errs.append(f"accounts: ids {ids} != expected sorted {sorted(orc.account_by_pool)}")
    for r in acc:
        o = orc.account_by_pool.get((r["account_id"], r["asset"]))
        if o is None:
            continue
        w = f"account {r['account_id']} {r['asset']}:"
        for c in ACCOUNT_NUMERIC:
            _close(c, r[c], o[c], o["_tol"][c], strict, errs, w)
        if strict and r["status"] != o["status"] or r["status"] not in o["_status_ok"]:
            errs.append(f"{w} status {r['status']} != oracle {o['status']} "
                        f"(allowed {sorted(o['_status_ok'])})")
        if r["n_positions"] != o["n_positions"]:
            errs.append(f"{w} n_positions {r['n_positions']} != {o['n_positions']}")

    # ---- positions -------------------------------------------------------------------
    keys = [(r["account_id"], r["symbol"], r["margin_mode"]) for r in pos]
    # by margin pool (account_id, asset), then symbol, cross first
    want_keys = sorted(orc.position_by_key,
                       key=lambda k: (k[0], orc.position_by_key[k]["asset"], k[1], k[2] != "cross"))
    if keys != want_keys:
        errs.append(f"positions: keys/order {keys} != {want_keys}")
    for r in pos:
        k = (r["account_id"], r["symbol"], r["margin_mode"])
        o = orc.position_by_key.get(k)
        if o is None:
            continue
        w = f"position {k}:"
        if r["side"] != o["side"]:
            errs.append(f"{w} side {r['side']} != {o['side']}")
        if r["asset"] != o["asset"]:
            errs.append(f"{w} asset {r['asset']} != {o['asset']}")
        for c in POSITION_NUMERIC:
            _close(c, r[c], o[c], o["_tol"][c], strict, errs, w)
        if strict and r["status"] != o["status"] or r["status"] not in o["_status_ok"]:
            errs.append(f"{w} status {r['status']} != oracle {o['status']} "
                        f"(allowed {sorted(o['_status_ok'])})")
        for c in ("liq_price", "bankruptcy_price"):
            _nullable_price(c, r[c], o, strict, errs, w)
        if venue.adl_score != "random":
            _close("adl_score", r["adl_score"], o["adl_score"], o["_tol"]["adl_score"], strict,
                   errs, w)

    # ---- ADL queues ------------------------------------------------------------------
    queues: dict = {}
    for r in pos:
        queues.setdefault((r["symbol"], r["side"]), []).append(r)
    for qk, queue in queues.items():
        ranks = sorted(r["adl_rank"] for r in queue)
        if ranks != list(range(1, len(queue) + 1)):
            errs.append(f"queue {qk}: ranks {ranks} are not a permutation of 1..{len(queue)}")
            continue
        order = sorted(queue, key=lambda r: r["adl_rank"])
        okeys = [(r["account_id"], r["symbol"], r["margin_mode"]) for r in order]
        if venue.adl_score != "random":
            # the engine's order must sort its own scores (ties: account id, cross first)
            for a, b in zip(order, order[1:]):
                ka = (-a["adl_score"], a["account_id"], a["margin_mode"] != "cross")
                kb = (-b["adl_score"], b["account_id"], b["margin_mode"] != "cross")
                if not ka < kb:
                    errs.append(f"queue {qk}: engine rank order not sorted by its scores "
                                f"at {a['account_id']}/{a['margin_mode']} -> "
                                f"{b['account_id']}/{b['margin_mode']}")
            # and agree with the oracle's, up to near-ties
            for i, a in enumerate(okeys):
                oa = orc.position_by_key[a]
                for b in okeys[i + 1:]:
                    ob = orc.position_by_key[b]
                    if oa["adl_rank"] < ob["adl_rank"]:
                        continue
                    sa, sb = oa["adl_score"], ob["adl_score"]
                    ta, tb = oa["_tol"]["adl_score"], ob["_tol"]["adl_score"]
                    near = (sa.is_infinite() or sb.is_infinite() or INF in (ta, tb)
                            or abs(sa - sb) <= ta + tb)
                    if strict or not near:
                        errs.append(f"queue {qk}: engine puts {a} (oracle rank "
                                    f"{oa['adl_rank']}, score {oa['adl_score']:.6g}) before "
                                    f"{b} (oracle rank {ob['adl_rank']}, score "
                                    f"{ob['adl_score']:.6g})")
        # lights from the engine's (validated) order
        oqueue = [dict(size=dec(float(r["size"]))) for r in order]
        allowed = queue_lights_ok(oqueue, venue.lights)
        exact = queue_lights(oqueue, venue.lights)
        for r, al, ex in zip(order, allowed, exact):
            if (strict and r["adl_lights"] != ex) or r["adl_lights"] not in al:
                errs.append(f"queue {qk}: {r['account_id']}/{r['margin_mode']} rank "
                            f"{r['adl_rank']} lights {r['adl_lights']} != {ex}")
    return errs
