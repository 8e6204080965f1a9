"""Typed, documented schemas of every table gpurisk reads or writes (DESIGN §3)."""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("healthy", "margin_call", "liquidatable", "bankrupt")  # kernel codes 0..3
SIDES = ("long", "short")
MARGIN_MODES = ("cross", "isolated")



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

# Keys that identify a row in error messages.
TABLE_KEYS = {
    "markets": ("symbol",),
    "tiers": ("symbol", "notional_floor"),
    "accounts": ("account_id",),
    "positions": ("account_id", "symbol", "margin_mode"),
}

ACCOUNT_OUTPUT = {
    "account_id": "account id, one row per input account, sorted",
    "wallet_balance": "wallet balance as given",
    "upnl": "sum of unrealised PnL over cross positions",
    "equity": "wallet_balance + upnl",
    "maint_margin": "sum of maintenance margin over cross positions",
    "init_margin": "sum of initial margin over cross positions",
    "margin_ratio": "maint_margin / equity; +inf when equity <= 0; 0 with no cross positions",
    "available_balance": "equity - init_margin",
    "status": "healthy | margin_call | liquidatable | bankrupt",
    "n_positions": "cross and isolated positions held",
}

POSITION_OUTPUT = {
    "account_id": "owner",
    "symbol": "market",
    "margin_mode": "cross | isolated",
    "side": "long | short",
    "size": "signed size",
    "entry_price": "entry price",
    "mark_price": "mark price used",
    "notional": "|size| * mark_price * contract_size",
    "upnl": "size * (mark_price - entry_price) * contract_size",
    "maint_margin": "tiered maintenance margin",
    "init_margin": "notional / leverage",
    "margin_ratio": "the account's (cross) or the position's own (isolated)",
    "status": "the account's (cross) or the position's own (isolated)",
    "liq_price": "price where equity = maintenance margin, others at mark, stepped to the trigger side "
                 "(a revaluation there says liquidatable) and rounded to the tick; null if no positive price",
    "bankruptcy_price": "price where closing leaves equity zero; null if not positive",
    "adl_score": "venue ADL score, higher = deleveraged first",
    "adl_rank": "1-based place in the ADL queue of (symbol, side); 1 = first",
    "adl_lights": "1..5 indicator, 5 = front of the queue",
}
