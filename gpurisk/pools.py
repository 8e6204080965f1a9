"""Contract types and margin pools (README "Inverse contracts").

A market is linear (PnL and margin in the quote asset) or inverse (coin-margined), and settles
in one asset. An account holds one wallet per asset: each (account_id, asset) row of the
accounts table is a margin pool, holding the positions of the markets settled in its asset.
Here: the settle asset a market's symbol names, the check that every position has its pool,
and the pool row of each position. The formulas are in the kernels (kernels/common.cuh).
"""

from __future__ import annotations

import numpy as np

try:  # Polars is needed at the edges (validation), not by the array core
    import polars as pl
except ImportError:  # pragma: no cover
    pl = None

from .schema import DEFAULT_SETTLE_ASSET


#: the coin an inverse market settles in, read from its symbol: BTCUSD, XBTUSD, BTCUSD_PERP,
#: BTCUSD_250328, BTC/USD, BTC-USD-SWAP, BTC-PERPETUAL (Deribit)
_INVERSE_BASE = r"^([A-Z0-9]+?)(?:[-_/]?USD(?:[-_][A-Z0-9]+)*|-PERPETUAL)$"


def settle_asset_expr() -> pl.Expr:
    """markets.settle_asset with its default filled in: as given; else USDT for a linear market
    and the base coin named by an inverse market's symbol (null when the symbol names none)."""
    inverse_base = pl.col("symbol").str.to_uppercase().str.extract(_INVERSE_BASE, 1)
    return (pl.when(pl.col("settle_asset").is_not_null()).then(pl.col("settle_asset"))
            .when(pl.col("contract_type") == "inverse").then(inverse_base)
            .otherwise(pl.lit(DEFAULT_SETTLE_ASSET)).alias("settle_asset"))


def validate_wallets(pos, acc, mk) -> None:
    """Every position's margin pool exists: an accounts row (account_id, asset) with the
    asset its market settles in. Positions of unknown accounts or symbols are reported by
    their own rules, not again here. ``pos``, ``acc``, ``mk``: the book's table checkers
    (gpurisk/book.py); the problem is added to ``pos``."""
    need = {"account_id", "symbol"}
    if need & pos.bad_columns or {"account_id", "asset"} & acc.bad_columns or \
            {"symbol", "settle_asset", "contract_type"} & mk.bad_columns:
        return
    settle = mk.df.select("symbol", "settle_asset").drop_nulls().unique("symbol", keep="first")
    wallets = acc.df.select("account_id", pl.col("asset").alias("settle_asset"), pl.lit(True).alias("__wallet"))
    if settle["settle_asset"].n_unique() <= 1 and wallets["settle_asset"].n_unique() <= 1 and \
            (settle.height == 0 or wallets.height == 0 or settle["settle_asset"][0] == wallets["settle_asset"][0]):
        return  # one asset throughout: the account rule says it all
    known = acc.df["account_id"].drop_nulls().implode()
    df = (pos.df.join(settle, on="symbol", how="left", maintain_order="left")
          .join(wallets.unique(["account_id", "settle_asset"]), on=["account_id", "settle_asset"], how="left",
                maintain_order="left"))
    pos.df = pos.df.with_columns(df["settle_asset"].alias("__settle"), df["__wallet"].alias("__wallet"))
    pos.rule("account_id", pl.col("account_id").is_in(known) & pl.col("__settle").is_not_null()
             & pl.col("__wallet").is_null(),
             "needs an accounts row with asset = its market's settle asset (markets.settle_asset: each "
             "(account_id, asset) is a margin pool); none for")
    pos.df = pos.df.drop("__settle", "__wallet")


def pool_rows(account_id: np.ndarray, account_asset: np.ndarray, pos_account_id: np.ndarray,
              pos_asset: np.ndarray) -> np.ndarray:
    """The account row (margin pool) of each position: the row of (its account_id, the settle
    asset of its market), rows sorted by (account_id, asset). Validation has checked each exists."""
    first = np.searchsorted(account_id, pos_account_id)
    if account_id.size < 2 or np.all(account_id[1:] != account_id[:-1]):
        return first.astype(np.int32)  # one wallet per account: the account's row
    row = first.copy()
    last = np.searchsorted(account_id, pos_account_id, side="right") - 1
    # An account holds a few assets: step on while the row's asset is below the wanted one.
    while True:
        more = (row < last) & (account_asset[np.minimum(row, account_asset.size - 1)] < pos_asset)
        if not more.any():
            break
        row[more] += 1
    return row.astype(np.int32)
