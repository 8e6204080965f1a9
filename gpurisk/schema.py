"""Typed, documented schemas of every table gpurisk reads or writes (DESIGN §3)."""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("healthy", "margin_call", "liquidatable", "bankrupt")  # kernel codes 0..3
SIDES = ("long", "short")
MARGIN_MODES = ("cross", "isolated")
CONTRACT_TYPES = ("linear", "inverse")  # markets.contract_type; kernel flag 0 / 1
#: the settlement asset of a linear market, and the asset of an accounts row, when not given
DEFAULT_SETTLE_ASSET = "USDT"
MARGIN_MODELS = ("tiered", "portfolio")  # accounts.margin_model and Venue.margin_model

# ------------------------------------------------------------------ input limits
# Bounds every numeric input is checked against (book validation, marks, scenario shocks),
# chosen so that no product, sum or quotient of the kernels (kernels/*.cu) can overflow to
# ±inf, underflow to 0 or become NaN where the true value is finite. With them:
#   |q|·E·cs <= 1e15 and P/E <= 1e24       => |q|·P·cs and |upnl| <= 1e39 per position,
#                                            sums over 2^31 positions <= 1e49;
#   |q|·cs >= 1e-24, 1 - mmr >= 0.01        => the liquidation-price denominator
#                                            |q|·cs·|side·mmr - 1| >= 1e-26, LP <= 1e75, and
#                                            |q|·cs·mmr − |q|·cs (a long) cancels by at most
#                                            100×: no rate so near 1 that LP loses its digits;
#   mmr >= 1e-6 (>> 2^-52)                  => MM = N·mmr_k - cum_k >= N·mmr_1 never rounds to
#                                            0, so the bankruptcy price's share MM_i/MM_acct is
#                                            defined: |eq·MM| / (MM_acct·q·cs) <= 1e88 / 1e-66;
#   balances 0 or 1e-12 <= |x| <= 1e15      => equity is 0 or >= ~1e-70 in magnitude, so the
#                                            margin ratio MM/equity <= 1e39 / 1e-70 stays finite;
#   leverage <= 1e6                         => IM = N/leverage >= 1e-42, never rounds to 0.
# Every bound sits many orders of magnitude beyond any real venue (BTC at 1e5, SHIB at 1e-5,
# the largest positions and balances around 1e10).
PRICE_MIN = 1e-12          #: mark_price, entry_price, revalue marks and shocked marks
PRICE_MAX = 1e12
CONTRACT_SIZE_MIN = 1e-12  #: markets.contract_size
CONTRACT_SIZE_MAX = 1e9
SIZE_MIN = 1e-12           #: |positions.size|
SIZE_MAX = 1e18
NOTIONAL_MAX = 1e15        #: |size|·entry_price·contract_size per position; tiers.notional_floor
BALANCE_MIN = 1e-12        #: |wallet_balance| and isolated_margin: 0, or at least this
BALANCE_MAX = 1e15         #: |wallet_balance|, isolated_margin, the stress insurance fund
MAINT_RATE_MIN = 1e-6      #: tiers.maint_margin_rate in [MAINT_RATE_MIN, MAINT_RATE_MAX]
MAINT_RATE_MAX = 0.99
LEVERAGE_MAX = 1e6         #: tiers.max_leverage and positions.leverage
MAX_STEPS = 10_000         #: stress steps (the steps option and a scenario step column)
SHOCK_CUBE_MAX_BYTES = 2 << 30  #: the (scenario, step, symbol) float64 shock array stress allocates



@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "str" | "float" | "int"
    required: bool = True
    default: object = None
    doc: str = ""


INPUT_TABLES: dict[str, tuple[Column, ...]] = {
    "markets": (
        Column("symbol", "str", doc="unique market name"),
        Column("mark_price", "float", doc="finite, > 0"),
        Column("contract_size", "float", False, 1.0, "> 0; 1 for linear quote-margined contracts"),
        Column("tick_size", "float", False, None,
               "optional, finite, > 0 (null: no tick); liq_price is rounded to it on the trigger side"),
        Column("contract_type", "str", False, "linear",
               "linear (PnL and margin in the quote asset) or inverse (coin-margined: a contract is worth "
               "contract_size in the quote currency; PnL, margin and wallet in the settle asset)"),
        Column("settle_asset", "str", False, None,
               "the asset PnL and margin are paid in; default USDT for linear, the symbol's base coin for "
               "inverse (BTCUSD, XBTUSD, BTCUSD_PERP, BTC-PERPETUAL -> BTC, XBT, BTC, BTC)"),
    ),
    "tiers": (
        Column("symbol", "str", doc="a symbol of markets; at least one tier per traded symbol"),
        Column("notional_floor", "float", doc="first tier 0, strictly increasing"),
        Column("maint_margin_rate", "float", doc="in (0, 1), non-decreasing"),
        Column("maint_amount", "float", False, None,
               "optional; derived so maintenance margin is continuous across tiers"),
        Column("max_leverage", "float", doc=">= 1; initial margin rate = 1 / max_leverage"),
    ),
    "accounts": (
        Column("account_id", "int", doc="unique"),
        Column("wallet_balance", "float", doc="finite"),
        Column("asset", "str", False, DEFAULT_SETTLE_ASSET,
               "the wallet's asset (default USDT); (account_id, asset) is unique, and each pair is a margin "
               "pool: the account's positions in markets settled in that asset"),
        Column("margin_model", "str", False, None,
               "optional: tiered or portfolio (null: the venue's margin model, Venue.margin_model)"),
    ),
    "positions": (
        Column("account_id", "int", doc="an account of accounts"),
        Column("symbol", "str", doc="a symbol of markets"),
        Column("size", "float", doc="signed: + long, - short; finite, != 0"),
        Column("entry_price", "float", doc="finite, > 0"),
        Column("margin_mode", "str", False, "cross", "cross or isolated"),
        Column("isolated_margin", "float", False, 0.0, ">= 0; > 0 for isolated, 0 for cross"),
        Column("leverage", "float", False, None, "optional, >= 1; default the tier's max leverage"),
    ),
}

# Risk-based portfolio margin parameters (gpurisk/portfolio.py, README "Portfolio margin"): one row
# per symbol a portfolio account may hold, naming its risk group (symbols that move together);
# the group's parameters repeat on each of its rows and must agree.
PORTFOLIO_TABLE: tuple[Column, ...] = (
    Column("symbol", "str", doc="a market symbol; unique"),
    Column("risk_group", "str", doc="the risk group: its symbols are shocked together (e.g. every BTC contract)"),
    Column("price_range", "float", doc="largest relative price move of the group's grid, in (0, 1): "
                                      "shocks evenly spaced over [-price_range, +price_range]"),
    Column("shocks", "int", doc="number of shocks in the grid, 2..1001 (11 or 33 are usual)"),
    Column("offset_rate", "float", False, 0.0,
           "contingency: share of the offsetting notional min(long, short) of the group, in [0, 1)"),
    Column("liquidity_threshold", "float", False, None,
           "gross notional of the group above which the liquidity contingency applies, >= 0 (null: none)"),
    Column("liquidity_rate", "float", False, 0.0,
           "contingency: share of the group's gross notional above liquidity_threshold, in [0, 1)"),
)
PORTFOLIO_GROUPS_MAX = 64     #: risk groups in one model (the kernel keeps an account's groups in registers)
PORTFOLIO_SHOCKS_MAX = 1001   #: shocks per group
#: Optional input table (README "Multi-asset collateral"): how each asset's balance counts in a
#: pooled venue's margin currency (Venue.collateral = "pooled"). One row per (asset, band).
COLLATERAL_TABLE: tuple[Column, ...] = (
    Column("asset", "str", doc="an asset of the book's wallets; every wallet asset needs rows"),
    Column("index_price", "float", doc="finite, > 0: the asset's price in the margin currency; the same on "
                                       "every row of the asset"),
    Column("collateral_ratio", "float", doc="in [0, 1]: the share of a band's value that counts (1 - haircut)"),
    Column("amount_floor", "float", False, 0.0,
           "the band's lower bound in units of the asset: first band 0, strictly increasing; each band "
           "[floor_k, floor_k+1) counts at its own ratio, like a progressive tax (Bybit's tiered collateral "
           "value ratio); one row of floor 0 for an untiered asset"),
)
INPUT_TABLES["collateral"] = COLLATERAL_TABLE

# Keys that identify a row in error messages.
TABLE_KEYS = {
    "collateral": ("asset", "amount_floor"),
    "markets": ("symbol",),
    "tiers": ("symbol", "notional_floor"),
    "accounts": ("account_id",),
    "positions": ("account_id", "symbol", "margin_mode"),
    "portfolio": ("symbol",),
}

ACCOUNT_OUTPUT = {
    "account_id": "account id, one row per input account row (account_id, asset), sorted",
    "asset": "the wallet's asset: every money column of the row is in it",
    "wallet_balance": "wallet balance as given",
    "upnl": "sum of unrealised PnL over cross positions",
    "equity": "wallet_balance + upnl",
    "maint_margin": "sum of maintenance margin over cross positions",
    "close_fee": "sum of the close fee counted in the requirement (Venue.close_fee_rate; 0 without)",
    "init_margin": "sum of initial margin over cross positions",
    "margin_ratio": "(maint_margin + close_fee) / equity; +inf when equity <= 0; 0 with no cross positions",
    "available_balance": "equity - init_margin (or per Venue.available_upnl)",
    "status": "healthy | margin_call | liquidatable | bankrupt",
    "n_positions": "cross and isolated positions held",
}

# Columns added to the accounts table when the venue carries a portfolio model (README
# "Portfolio margin"); maint_margin, init_margin, margin_ratio, available_balance and status
# then come from the portfolio requirement for the accounts in portfolio mode.
PORTFOLIO_ACCOUNT_OUTPUT = {
    "margin_model": "tiered | portfolio: the model that sets this account's requirement",
    "portfolio_margin": "portfolio maintenance requirement: worst scenario loss + contingencies (cross positions); "
                        "null where a held symbol has no risk group",
    "scenario_loss": "the largest loss over the scenario grid (summed over groups moving independently)",
    "worst_group": "risk group of the worst scenario (the largest group loss; null when groups move jointly)",
    "worst_shock": "relative price move of the worst scenario",
    "offset_contingency": "offset_rate x min(long, short) notional, summed over groups",
    "liquidity_contingency": "liquidity_rate x gross notional above liquidity_threshold, summed over groups",
    "tiered_margin": "the tiered maintenance margin of the same cross positions, beside it",
}

#: Added to the accounts table by a pooled venue (Venue.collateral = "pooled"): an account's rows
#: of every asset form one pool, in the venue's margin currency. margin_ratio, status and
#: available_balance of each row are then the pool's; the other money columns stay the row's
#: own, in its asset.
POOLED_ACCOUNT_OUTPUT = {
    "collateral_value": "the row's equity in the margin currency: each band of a positive equity times its "
                        "collateral ratio, times the index price; a negative equity at full value",
    "pool_equity": "sum of collateral_value over the account's rows",
    "pool_maint_margin": "sum of maint_margin x index price over the account's rows",
    "pool_close_fee": "sum of close_fee x index price over the account's rows",
    "pool_init_margin": "sum of init_margin x index price over the account's rows",
    "margin_ratio": "(pool_maint_margin + pool_close_fee) / pool_equity; +inf when pool_equity <= 0; 0 with "
                    "no cross positions in the pool",
    "available_balance": "pool_equity - pool_init_margin",
    "status": "the pool's: healthy | margin_call | liquidatable | bankrupt",
}

POSITION_OUTPUT = {
    "account_id": "owner",
    "symbol": "market",
    "asset": "the market's settle asset: notional, upnl, margins and close fee are in it",
    "margin_mode": "cross | isolated",
    "side": "long | short",
    "size": "signed size",
    "entry_price": "entry price",
    "mark_price": "mark price used",
    "notional": "|size| * mark_price * contract_size (inverse: |size| * contract_size / mark_price, in coin)",
    "upnl": "size * (mark_price - entry_price) * contract_size (inverse: size * contract_size * "
            "(1/entry_price - 1/mark_price), in coin)",
    "maint_margin": "tiered maintenance margin (an isolated position of a portfolio account: its own portfolio "
                    "requirement)",
    "close_fee": "taker fee to close at the mark, counted in the requirement (Venue.close_fee_rate)",
    "init_margin": "notional / leverage (entry notional with Venue.im_base='entry'; an isolated position of a "
                   "portfolio account: im_multiple x its requirement)",
    "margin_ratio": "the account's (cross) or the position's own (isolated)",
    "status": "the account's (cross) or the position's own (isolated)",
    "liq_price": "price where equity = maintenance margin, others at mark, stepped to the trigger side "
                 "(a revaluation there says liquidatable) and rounded to the tick; null if no positive price, "
                 "and for positions of portfolio accounts",
    "bankruptcy_price": "price where closing leaves equity zero; null if not positive",
    "adl_score": "venue ADL score, higher = deleveraged first",
    "adl_rank": "1-based place in the ADL queue of (symbol, side); 1 = first",
    "adl_lights": "1..5 indicator, 5 = front of the queue",
}
