"""Venue conventions: how margin, ADL priority and indicator lights are computed.

A :class:`Venue` holds the conventions; the presets are instances of it, and every API
that takes ``venue=`` accepts a preset name or a ``Venue``. The README cites each venue's
public documentation for the rules below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotation only: portfolio.py imports this module
    from .portfolio import PortfolioModel

ADL_SCORES = {"pnl_leverage": 0, "binance": 1, "hyperliquid": 2, "random": 3,  # kernel codes
              "mark_over_entry": 4}
LIGHTS_RULES = ("size", "rank")
MM_BASES = ("mark", "entry")
IM_BASES = ("mark", "entry")
TIER_BASES = ("notional", "contracts")
TIER_RATES = ("deduction", "whole")
AVAILABLE_RULES = ("equity", "losses", "wallet")  # kernel codes 0, 1, 2 (kernels/margin.cu)
COLLATERAL_RULES = ("per_asset", "pooled")


@dataclass(frozen=True)
class Venue:
    """Conventions of one venue.

    name: label used in outputs.
    mm_base: ``"mark"`` (maintenance margin on mark notional) or ``"entry"`` (on entry
        notional, as BitMEX and Bybit classic do).
    adl_score: ``"pnl_leverage"`` (BitMEX/Bybit: pnl% × effective leverage),
        ``"binance"`` (positive PnL over wallet × margin ratio), ``"hyperliquid"``
        ((mark/entry)^side × notional / equity), ``"random"`` (dYdX: a seeded cyclic order).
    lights: ``"size"`` (size-weighted cumulative share of the queue) or ``"rank"``
        (rank / count), both in 20% steps, 5 lights at the front.
        ``"mark_over_entry"`` (mark/entry × notional / equity for both sides, Hyperliquid's text).
    margin_call_ratio: margin ratio from which an account is in ``margin_call``.
    liquidation_ratio: margin ratio from which it is ``liquidatable`` (1 = equity at MM).
    adl_seed: seed of the ``random`` order.
    tier_basis: ``"notional"`` (tier floors are notionals) or ``"contracts"`` (floors are
        numbers of contracts |q|, as OKX counts them; the tier then does not move with price;
        needs ``tier_rate="whole"``).
    tier_rate: ``"deduction"`` (MM = N·rate_k − amount_k, continuous across tiers: Binance,
        Bybit, Gate since 2025-07-29) or ``"whole"`` (the tier's rate on the whole position, no
        deduction: OKX; the tiers' maint_amount is then not used).
    close_fee_rate: the taker fee to close, as a rate on the mark notional, counted in the
        requirement beside the MM (OKX, Gate). Reported as ``close_fee``; ``maint_margin``
        stays the venue's MM. The margin ratio and status use MM + close fee, and so do the
        liquidation price (where the mark is the liquidation price) and the ADL ranking's
        inputs. 0: none. The fee is on the notional at the mark; at the trigger the mark is the
        liquidation price, so venues that document it "at the liquidation price" (Gate, OKX) get
        the same liquidation price. A fee on the bankruptcy value (Bybit's "fee to close") is
        not modelled in the requirement.
    bankruptcy_fee: the bankruptcy price leaves the close fee paid as well (closing there at
        close_fee_rate on the value at that price leaves equity zero), as Bybit's inverse
        contracts define it: BP = (1 + fee)·q / (q/E + balance) for a long. False (default):
        closing at the bankruptcy price leaves equity zero, fee unpaid.
    collateral: ``"per_asset"`` (each (account, asset) wallet is its own margin pool) or
        ``"pooled"`` (Binance Multi-Assets mode, Bybit's unified account: an account's wallets of
        every asset form one pool valued in ``margin_currency`` through the book's collateral
        table; README "Multi-asset collateral"). Pooled needs ``available_upnl="equity"``.
    margin_currency: the currency a pooled venue values collateral and margin in (a label).
    im_base: initial margin on the ``"mark"`` notional or on the ``"entry"`` notional
        (Bybit's classic account).
    available_upnl: ``"equity"`` (available = equity − IM), ``"losses"`` (wallet + unrealised
        losses − IM: profits not available), ``"wallet"`` (wallet − IM, Bybit's classic account).
    margin_model: ``"tiered"`` (each position's tiered MM, summed) or ``"portfolio"`` (risk-based
        portfolio margin: the worst loss over a price grid per risk group plus contingencies,
        gpurisk/portfolio.py): the model of every account whose ``accounts.margin_model`` is null.
    portfolio: the :class:`gpurisk.PortfolioModel` parameters; needed when any account uses the
        portfolio model. With it, the accounts table carries the portfolio figures of every
        account beside the tiered ones.
    """

    name: str
    mm_base: str = "mark"
    adl_score: str = "binance"
    lights: str = "rank"
    margin_call_ratio: float = 0.8
    liquidation_ratio: float = 1.0
    adl_seed: int = 0
    tier_basis: str = "notional"
    tier_rate: str = "deduction"
    close_fee_rate: float = 0.0
    im_base: str = "mark"
    available_upnl: str = "equity"
    bankruptcy_fee: bool = False
    margin_model: str = "tiered"
    portfolio: "PortfolioModel | None" = None
    collateral: str = "per_asset"
    margin_currency: str = "USD"

    def __post_init__(self):
        from .portfolio import PortfolioModel
        from .schema import MARGIN_MODELS

        if self.margin_model not in MARGIN_MODELS:
            raise ValueError(f"Venue.margin_model must be one of {MARGIN_MODELS}, got {self.margin_model!r}")
        if self.portfolio is not None and not isinstance(self.portfolio, PortfolioModel):
            raise ValueError("Venue.portfolio must be a gpurisk.PortfolioModel (PortfolioModel.read(FILE) or "
                             f".from_frame(table)), got {type(self.portfolio).__name__}")
        if self.margin_model == "portfolio" and self.portfolio is None:
            raise ValueError("Venue.margin_model='portfolio' needs the portfolio parameters: "
                             "Venue(..., margin_model='portfolio', portfolio=PortfolioModel.read(FILE))")
        for field, allowed in (("tier_basis", TIER_BASES), ("tier_rate", TIER_RATES), ("im_base", IM_BASES),
                               ("available_upnl", AVAILABLE_RULES), ("collateral", COLLATERAL_RULES)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"Venue.{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if self.tier_basis == "contracts" and self.tier_rate != "whole":
            # A deduction keeps MM continuous across notional floors; over contract floors it
            # does not (the notional at a floor moves with the price) and can take MM below 0.
            raise ValueError("Venue.tier_basis='contracts' needs tier_rate='whole' (the tier's rate on the whole "
                             "position, as OKX counts them): deduction amounts keep the maintenance margin "
                             "continuous only across notional floors, and over contract floors can make it negative")
        if not (isinstance(self.close_fee_rate, (int, float)) and 0.0 <= self.close_fee_rate < 0.1):
            raise ValueError(f"Venue.close_fee_rate must be a rate in [0, 0.1), got {self.close_fee_rate!r}")
        if self.collateral == "pooled" and self.available_upnl != "equity":
            raise ValueError("a pooled Venue (collateral='pooled') takes available_upnl='equity' (available = pool "
                             f"equity - pool initial margin), got {self.available_upnl!r}")
        if self.mm_base not in MM_BASES:
            raise ValueError(f"Venue.mm_base must be one of {MM_BASES}, got {self.mm_base!r}")
        if self.adl_score not in ADL_SCORES:
            raise ValueError(f"Venue.adl_score must be one of {tuple(ADL_SCORES)}, got {self.adl_score!r}")
        if self.lights not in LIGHTS_RULES:
            raise ValueError(f"Venue.lights must be one of {LIGHTS_RULES}, got {self.lights!r}")
        if not (0 < self.margin_call_ratio <= self.liquidation_ratio):
            raise ValueError("Venue needs 0 < margin_call_ratio <= liquidation_ratio, got "
                             f"{self.margin_call_ratio} and {self.liquidation_ratio}")

    def with_(self, **changes) -> "Venue":
        """A copy with some conventions changed, e.g. ``BINANCE.with_(margin_call_ratio=0.7)``."""
        return replace(self, **changes)


# ADL rules, each with its source and date:
# - "pnl_leverage": pnl% × effective leverage (pnl% / effective leverage when losing), ranked
#   per (symbol, side). BitMEX "Auto-Deleveraging" (bitmex.com/app/autoDeleveraging) and Bybit
#   "Auto-Deleveraging (ADL)" (the sources the README cites). Binance's current ADL FAQ ranks by
#   PnL percentage × effective leverage according to the tracker (issue 14, 2026-11) and
#   DESIGN §5; the copy of "What Is Auto-Deleveraging (ADL) and How Does It Work"
#   (binance.com/en/support/faq/360033525471) that could be read on 2026-11-28 still carried the
#   2019-09-09 text below, so the current wording was not re-checked here. Effective leverage
#   is taken per position as |q|·P / (|q|·|P − BP|) for every venue.
# - "binance": max(0, upnl)/max(1, wallet) × margin ratio ("LeveragePnL"): the same FAQ as
#   published on 2019-09-09. Kept as the named variant "binance_adl_2019".
# - "mark_over_entry": mark/entry × notional / account value, Hyperliquid docs "Auto-deleveraging"
#   (hyperliquid.gitbook.io/hyperliquid-docs/trading/auto-deleveraging), which writes mark/entry
#   for both sides (as the README and DESIGN §5 quote it). gpurisk's earlier reading,
#   (P/E)^side ("hyperliquid"), is kept as the named variant "hyperliquid_side_2025".
BINANCE = Venue("binance", mm_base="mark", adl_score="pnl_leverage", lights="rank")
# Bybit's classic account: IM on the entry value, and unrealised profit is not available
# (losses are counted; the example the tests reproduce has a profit, so the loss side follows
# the cautious reading).
BYBIT = Venue("bybit", mm_base="entry", adl_score="pnl_leverage", lights="rank", im_base="entry",
              available_upnl="losses")
BITMEX = Venue("bitmex", mm_base="entry", adl_score="pnl_leverage", lights="size")
HYPERLIQUID = Venue("hyperliquid", mm_base="mark", adl_score="mark_over_entry", lights="rank")
DYDX = Venue("dydx", mm_base="mark", adl_score="random", lights="rank")
# OKX USDT-margined swaps: tiers counted in contracts, the tier's rate on the whole position,
# the liquidation fee (taker rate) in the requirement. Sources: OKX "Tiered maintenance margin
# ratio rules" and the USDT-margined swap position-tier announcements (the tier tables in
# contracts); OKX Academy "USDT Delivery Contracts: Margin" (liquidation when the margin ratio
# reaches the MMR + liquidation fee rate). 0.05% is OKX's regular-user swap taker rate.
OKX = Venue("okx", mm_base="mark", adl_score="pnl_leverage", lights="rank", tier_basis="contracts",
            tier_rate="whole", close_fee_rate=0.0005)
# Gate USDT-margined perpetuals: tiered MM by position value with deductions (the gradient rule
# since 2025-07-29), liquidation price (E ∓ margin/size)/(1 ∓ (MMR + taker rate)): the taker fee
# on the notional at the liquidation price. Taker rate 0.075% as Gate's help quotes it.
GATE = Venue("gate", mm_base="mark", adl_score="pnl_leverage", lights="rank", close_fee_rate=0.00075)

# Bybit's unified trading account (UTA), cross margin: every collateral asset valued in USD at
# its index price and tiered collateral value ratio, debts at full value, one margin balance for
# the account ("Understanding Collateral Value Ratios in Unified Trading Account", Bybit help
# center, updated 2025-09-18; "Key Terms and Formulas in Unified Trading Account", 2025-09-02:
# Account MM Rate = Total Maintenance Margin / Margin Balance). Position value at the mark.
BYBIT_UTA = Venue("bybit_uta", mm_base="mark", adl_score="pnl_leverage", lights="rank", collateral="pooled",
                  margin_currency="USD")

# Binance USDⓈ-M Multi-Assets mode: the futures wallet's assets pooled in USD at their index
# prices and collateral value ratios (BTC, ETH, BNB 95%; XRP, ADA, DOT 90%: "BNB with a market
# value of $1,000 will be valued at $950"), one account margin ratio = account MM / account
# equity ("What Is Multi-Assets Mode and What Assets Does It Support", 2021-04-19; "How to
# Calculate Margin in Multi-Assets Mode", 2022-07-06; Binance FAQ). That FAQ counts assets at
# min(equity·bid rate, equity·ask rate) and margins at the ask rate: in the collateral table,
# index_price = the ask rate and collateral_ratio = haircut × bid / ask (its worked example is
# reproduced in tests/test_collateral.py).
BINANCE_MULTI_ASSETS = BINANCE.with_(name="binance_multi_assets", collateral="pooled", margin_currency="USD")

PRESETS = {v.name: v for v in (BINANCE, BYBIT, BITMEX, HYPERLIQUID, DYDX, OKX, GATE, BYBIT_UTA,
                               BINANCE_MULTI_ASSETS)}
# Older rules, kept under their own names (each Venue keeps its venue's name: ladders and labels).
VARIANTS = {
    "binance_adl_2019": BINANCE.with_(adl_score="binance"),
    "hyperliquid_side_2025": HYPERLIQUID.with_(adl_score="hyperliquid"),
}


def get_venue(venue: "str | Venue") -> Venue:
    if isinstance(venue, Venue):
        return venue
    try:
        return PRESETS[venue] if venue in PRESETS else VARIANTS[venue]
    except (KeyError, TypeError):
        raise ValueError(f"unknown venue {venue!r}; presets are {', '.join(PRESETS)} (older rules: "
                         f"{', '.join(VARIANTS)}), or pass a gpurisk.Venue(...)") from None
