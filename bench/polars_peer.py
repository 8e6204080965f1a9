"""A straightforward, idiomatic Polars implementation of the same revaluation, the peer that
gpurisk is timed against. Binance conventions (MM on mark notional, Binance's 2019 ADL score,
rank by score then account id): gpurisk runs as ``PEER_VENUE`` beside it. Checked against
gpurisk before its time counts."""

from __future__ import annotations

import polars as pl

#: the gpurisk venue whose outputs the peer computes (its ADL score is Binance's 2019 rule)
PEER_VENUE = "binance_adl_2019"


def polars_revalue(frames: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    markets, tiers, accounts, positions = (frames[k] for k in ("markets", "tiers", "accounts", "positions"))
    tiers = tiers.sort("symbol", "notional_floor").with_columns(
        pl.col("notional_floor").alias("tier_floor"))
    pos = (positions.with_row_index("row")
           .join(markets, on="symbol", how="left")
           .with_columns(
               notional=pl.col("size").abs() * pl.col("mark_price") * pl.col("contract_size"),
               upnl=pl.col("size") * (pl.col("mark_price") - pl.col("entry_price")) * pl.col("contract_size"),
               isolated=pl.col("margin_mode") == "isolated")
           .sort("notional")
           .join_asof(tiers.select("symbol", "tier_floor", "maint_margin_rate", "maint_amount", "max_leverage"),
                      left_on="notional", right_on="tier_floor", by="symbol", strategy="backward")
           .with_columns(
               maint=pl.col("notional") * pl.col("maint_margin_rate") - pl.col("maint_amount"),
               init=pl.col("notional") / pl.col("leverage").fill_null(pl.col("max_leverage")))
           .sort("row"))
    sums = (pos.filter(~pl.col("isolated")).group_by("account_id")
            .agg(pl.col("upnl").sum().alias("acc_upnl"), pl.col("maint").sum().alias("acc_maint"),
                 pl.col("init").sum().alias("acc_init"), pl.len().alias("n_cross")))
    acc = (accounts.join(sums, on="account_id", how="left")
           .with_columns(pl.col("acc_upnl", "acc_maint", "acc_init").fill_null(0.0), pl.col("n_cross").fill_null(0))
           .with_columns(equity=pl.col("wallet_balance") + pl.col("acc_upnl"))
           .with_columns(
               margin_ratio=pl.when(pl.col("n_cross") == 0).then(0.0)
               .when(pl.col("equity") <= 0).then(float("inf"))
               .otherwise(pl.col("acc_maint") / pl.col("equity")),
               available_balance=pl.col("equity") - pl.col("acc_init"))
           .with_columns(status=pl.when(pl.col("n_cross") == 0).then(pl.lit("healthy"))
                         .when(pl.col("equity") <= 0).then(pl.lit("bankrupt"))
                         .when(pl.col("margin_ratio") >= 1).then(pl.lit("liquidatable"))
                         .when(pl.col("margin_ratio") >= 0.8).then(pl.lit("margin_call"))
                         .otherwise(pl.lit("healthy")))
           .sort("account_id"))
    pos = (pos.join(acc.select("account_id", "wallet_balance", "equity", "margin_ratio"), on="account_id", how="left")
           .with_columns(
               pos_equity=pl.when(pl.col("isolated")).then(pl.col("isolated_margin") + pl.col("upnl")).otherwise(pl.col("equity")),
               w=pl.when(pl.col("isolated")).then(pl.col("isolated_margin")).otherwise(pl.col("wallet_balance")))
           .with_columns(
               pos_ratio=pl.when(pl.col("isolated"))
               .then(pl.when(pl.col("pos_equity") <= 0).then(float("inf")).otherwise(pl.col("maint") / pl.col("pos_equity")))
               .otherwise(pl.col("margin_ratio")))
           .with_columns(
               adl_score=pl.when(pl.col("pos_equity") <= 0).then(0.0).otherwise(
                   pl.col("upnl").clip(lower_bound=0.0) / pl.col("w").clip(lower_bound=1.0) * pl.col("pos_ratio")),
               side=pl.when(pl.col("size") > 0).then(pl.lit("long")).otherwise(pl.lit("short")))
           .with_columns(
               adl_rank=pl.struct(-pl.col("adl_score"), pl.col("account_id"), pl.col("isolated"))
               .rank("ordinal").over("symbol", "side"))
           .sort("row"))
    return acc, pos
