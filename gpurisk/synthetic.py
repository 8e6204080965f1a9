"""A built-in synthetic exchange: a balanced, realistic book for demos, tests and benchmarks.

Several symbols with tier tables shaped like the venues' published ones, heavy-tailed
position sizes and leverage, a mix of cross and isolated margin, some accounts near or past
liquidation, and one market-maker account that takes the other side of the net open
interest so that Σ size = 0 per symbol (a balanced book).
"""

from __future__ import annotations

import numpy as np

from .book import Book, derived_maint_amount

# Tier ladders: (notional floor, maintenance margin rate, max leverage). BTC follows the
# shape of Binance's published BTCUSDT table; the others are scaled-down ladders.
_BTC_TIERS = [(0, 0.004, 125), (5e4, 0.005, 100), (2.5e5, 0.01, 50), (1e6, 0.025, 20), (1e7, 0.05, 10),
              (2e7, 0.10, 5), (5e7, 0.125, 4), (1e8, 0.15, 3), (2e8, 0.25, 2), (3e8, 0.5, 1)]
_ETH_TIERS = [(0, 0.005, 100), (1e4, 0.0065, 75), (1e5, 0.01, 50), (5e5, 0.02, 25), (1e6, 0.05, 10),
              (2e6, 0.10, 5), (5e6, 0.125, 4), (1e7, 0.15, 3), (2e7, 0.25, 2)]
_ALT_TIERS = [(0, 0.01, 50), (5e3, 0.015, 25), (2.5e4, 0.02, 20), (1e5, 0.05, 10), (2.5e5, 0.10, 5),
              (1e6, 0.125, 4), (3e6, 0.15, 3), (5e6, 0.25, 2)]

# symbol, mark price, lot size, share of positions, tiers
SYMBOLS = [
    ("BTCUSDT", 61_250.0, 0.001, 0.30, _BTC_TIERS),
    ("ETHUSDT", 2_480.0, 0.01, 0.22, _ETH_TIERS),
    ("SOLUSDT", 142.5, 0.1, 0.11, _ALT_TIERS),
    ("BNBUSDT", 568.0, 0.01, 0.07, _ALT_TIERS),
    ("XRPUSDT", 0.5821, 1.0, 0.07, _ALT_TIERS),
    ("DOGEUSDT", 0.1183, 10.0, 0.07, _ALT_TIERS),
    ("AVAXUSDT", 27.31, 0.1, 0.05, _ALT_TIERS),
    ("LINKUSDT", 11.42, 0.1, 0.04, _ALT_TIERS),
    ("ARBUSDT", 0.7512, 1.0, 0.04, _ALT_TIERS),
    ("SUIUSDT", 1.734, 1.0, 0.03, _ALT_TIERS),
]
MARKET_MAKER_ID = 0


def synthetic_book(n_accounts: int, seed: int = 0, n_symbols: int = len(SYMBOLS),
                   isolated_share: float = 0.15, stressed_share: float = 0.06,
                   empty_share: float = 0.03, inverse_markets: int = 0) -> Book:
    """A balanced, realistic synthetic book of ``n_accounts`` traders plus one market maker
    (account 0) holding the other side of the net open interest of every symbol.

    About 2.7 positions per account (10M positions ≈ 3.7M accounts). Same seed, same book.
    Built straight into arrays (no Polars needed); ``synthetic_tables`` gives it as frames.
    ``inverse_markets``: the first few symbols (BTC, ETH, SOL, ...) become coin-margined
    markets (BTCUSD, ...: see with_inverse_markets); needs Polars.
    """
    if inverse_markets:
        linear = synthetic_book(n_accounts, seed, n_symbols, isolated_share, stressed_share, empty_share)
        return with_inverse_markets(linear, inverse_markets)
    if n_accounts < 1:
        raise ValueError("n_accounts must be >= 1")
    if not 1 <= n_symbols <= len(SYMBOLS):
        raise ValueError(f"n_symbols must be in 1..{len(SYMBOLS)}")
    rng = np.random.default_rng(seed)
    spec = sorted(SYMBOLS[:n_symbols], key=lambda s: s[0])  # symbol index = name order
    names = tuple(s[0] for s in spec)
    mark = np.array([s[1] for s in spec])
    lot = np.array([s[2] for s in spec])
    weight = np.array([s[3] for s in spec])
    weight = weight / weight.sum()

    # Positions per account: heavy-tailed, at most one per symbol; a few accounts hold none.
    per_account = np.minimum(rng.geometric(0.36, n_accounts), n_symbols)
    per_account[rng.random(n_accounts) < empty_share] = 0
    # Distinct symbols per account by popularity (Gumbel top-k), then in symbol order.
    keys = np.log(weight)[None, :] + rng.gumbel(size=(n_accounts, n_symbols))
    ranked = np.argsort(-keys, axis=1)
    chosen = np.where(np.arange(n_symbols)[None, :] < per_account[:, None], ranked, n_symbols)
    chosen.sort(axis=1)
    sym = chosen[chosen < n_symbols].astype(np.int32)  # row-major: account after account
    acc_idx = np.repeat(np.arange(1, n_accounts + 1, dtype=np.int32), per_account)  # 0 = market maker
    n = sym.size

    # Sizes: log-normal notional (median ~2.5k USDT, long tail to tens of millions).
    notional = np.minimum(np.exp(rng.normal(np.log(2_500.0), 1.7, n)), 4e7)
    lots = np.maximum(np.round(notional / (mark[sym] * lot[sym])), 1).astype(np.int64)
    lots *= np.where(rng.random(n) < 0.5, 1, -1)
    size = lots * lot[sym]
    entry = np.round(mark[sym] * np.exp(rng.normal(0.0, 0.04, n)), 6)
    entry_notional = np.abs(size) * entry

    # Leverage: most traders at 3-20x, a tail up to the tier's maximum.
    max_lev = np.empty(n)
    for s, (_, _, _, _, tiers) in enumerate(spec):
        m = sym == s
        floors = np.array([t[0] for t in tiers])
        k = np.searchsorted(floors, entry_notional[m], side="right") - 1
        max_lev[m] = np.array([t[2] for t in tiers], dtype=float)[k]
    lev = np.minimum(np.round(1 + rng.pareto(1.6, n) * 6), max_lev)
    explicit_lev = rng.random(n) < 0.6

    isolated = rng.random(n) < isolated_share
    im_entry = entry_notional / lev
    iso_margin = np.where(isolated, np.round(im_entry * rng.uniform(1.0, 1.6, n), 2), 0.0)

    # Wallets: a multiple of the cross initial margin; a stressed minority runs thin.
    cross_im = np.bincount(acc_idx, weights=np.where(isolated, 0.0, im_entry), minlength=n_accounts + 1)[1:]
    cushion = np.exp(rng.normal(0.5, 0.6, n_accounts))
    stressed = rng.random(n_accounts) < stressed_share
    cushion[stressed] = rng.uniform(0.05, 0.7, stressed.sum())
    wallet = np.round(cross_im * cushion + rng.exponential(200.0, n_accounts), 2)

    # Market maker: the other side of the net open interest, at mark, well collateralised.
    net_lots = np.bincount(sym, weights=lots, minlength=n_symbols).astype(np.int64)
    mm_sym = np.nonzero(net_lots)[0].astype(np.int32)
    mm_size = -net_lots[mm_sym] * lot[mm_sym]
    mm_wallet = float(np.round(np.sum(np.abs(mm_size) * mark[mm_sym]) * 0.25 + 1e6, 2))

    pos_account = np.concatenate([np.zeros(mm_sym.size, np.int32), acc_idx])
    counts = np.bincount(pos_account, minlength=n_accounts + 1)
    pos_start = np.zeros(n_accounts + 2, dtype=np.int64)
    np.cumsum(counts, out=pos_start[1:])
    tier_rows = [t for s in spec for t in s[4]]
    tier_start = np.zeros(n_symbols + 1, dtype=np.int32)
    np.cumsum([len(s[4]) for s in spec], out=tier_start[1:])
    tier_floor = np.array([t[0] for t in tier_rows], dtype=np.float64)
    tier_mmr = np.array([t[1] for t in tier_rows], dtype=np.float64)
    return Book(
        symbols=names,
        mark_price=mark.astype(np.float64),
        contract_size=np.ones(n_symbols),
        tier_start=tier_start,
        tier_floor=tier_floor,
        tier_mmr=tier_mmr,
        tier_cum=derived_maint_amount(tier_start, tier_floor, tier_mmr),
        tier_max_leverage=np.array([t[2] for t in tier_rows], dtype=np.float64),
        account_id=np.arange(n_accounts + 1, dtype=np.int64) + MARKET_MAKER_ID,
        wallet=np.concatenate([[mm_wallet], wallet]),
        pos_start=pos_start,
        pos_account=pos_account,
        pos_symbol=np.ascontiguousarray(np.concatenate([mm_sym, sym]), dtype=np.int32),
        size=np.concatenate([mm_size, size]),
        entry=np.concatenate([mark[mm_sym], entry]),
        isolated=np.concatenate([np.zeros(mm_sym.size, np.int8), isolated.astype(np.int8)]),
        isolated_margin=np.concatenate([np.zeros(mm_sym.size), iso_margin]),
        leverage=np.concatenate([np.zeros(mm_sym.size), np.where(explicit_lev, lev, 0.0)]),
        meta={"synthetic": {"n_accounts": n_accounts, "seed": seed}},
    )


#: USD value of one inverse contract: 100 for BTC, 10 for the others (Binance COIN-M's sizes)
INVERSE_CONTRACT_USD = {"BTCUSDT": 100.0}


def with_inverse_markets(book: Book, count: int) -> Book:
    """``book`` with its ``count`` most traded symbols (SYMBOLS order) turned coin-margined:
    BTCUSDT becomes BTCUSD, inverse, settled in BTC, 100 USD a contract (10 for the others).
    Each position keeps its side, entry and USD value (rounded to whole contracts); its
    isolated margin and the part of its account's wallet backing it (in proportion to the
    account's cross entry notional) move to a wallet in the coin, so accounts trading an
    inverse market hold one wallet per asset. Tier floors become coin notionals at the mark.
    The market maker takes the other side again: Σ size = 0 per symbol (in contracts)."""
    import polars as pl

    chosen = [s[0] for s in SYMBOLS if s[0] in book.symbols][:count]
    if count < 1 or len(chosen) < count:
        raise ValueError(f"inverse_markets must be in 1..{book.n_symbols}, got {count}")
    f = book.frames()
    coin = {s: s.removesuffix("USDT") for s in chosen}
    name = {s: coin[s] + "USD" for s in chosen}
    usd = {s: INVERSE_CONTRACT_USD.get(s, 10.0) for s in chosen}
    mark = dict(zip(book.symbols, book.mark_price.tolist()))
    is_inv = pl.col("symbol").is_in(chosen)
    renamed = pl.col("symbol").replace(name)
    markets = f["markets"].with_columns(
        pl.when(is_inv).then(pl.col("symbol").replace_strict(usd, default=1.0)).otherwise(pl.col("contract_size"))
        .alias("contract_size"),
        pl.when(is_inv).then(pl.lit("inverse")).otherwise(pl.lit("linear")).alias("contract_type"),
        pl.when(is_inv).then(pl.col("symbol").replace(coin)).otherwise(pl.lit("USDT")).alias("settle_asset"),
        renamed)
    at_mark = pl.col("symbol").replace_strict(mark, default=1.0)
    tiers = f["tiers"].with_columns(
        pl.when(is_inv).then((pl.col("notional_floor") / at_mark).round_sig_figs(3)).otherwise(pl.col("notional_floor"))
        .alias("notional_floor")).drop("maint_amount").with_columns(renamed)
    pos = f["positions"].with_columns(
        pl.col("symbol").replace(coin).alias("__coin"), is_inv.alias("__inv"),
        (pl.col("size").abs() * pl.col("entry_price")).alias("__value"))
    pos = pos.with_columns(
        pl.when(pl.col("__inv")).then(
            (pl.col("__value") / pl.col("symbol").replace_strict(usd, default=1.0)).round().clip(1.0)
            * pl.col("size").sign()).otherwise(pl.col("size")).alias("size"),
        pl.when(pl.col("__inv")).then((pl.col("isolated_margin") / pl.col("entry_price")).round(8))
        .otherwise(pl.col("isolated_margin")).alias("isolated_margin"))
    # the market maker (account 0) nets each inverse market again, in contracts
    others = pos.filter(pl.col("__inv") & (pl.col("account_id") != MARKET_MAKER_ID)).group_by("symbol").agg(
        pl.col("size").sum().alias("__net"))
    pos = pos.join(others, on="symbol", how="left", maintain_order="left").with_columns(
        pl.when(pl.col("__inv") & (pl.col("account_id") == MARKET_MAKER_ID)).then(-pl.col("__net"))
        .otherwise(pl.col("size")).alias("size")).filter(pl.col("size") != 0)
    # wallets: each account's cross entry notional per asset splits its wallet
    cross = pos.filter(pl.col("margin_mode") == "cross").with_columns(
        pl.when(pl.col("__inv")).then(pl.col("__coin")).otherwise(pl.lit("USDT")).alias("asset"))
    share = cross.group_by("account_id", "asset").agg(pl.col("__value").sum()).with_columns(
        (pl.col("__value") / pl.col("__value").sum().over("account_id")).alias("__share"))
    coin_mark = {coin[s]: mark[s] for s in chosen}
    wallets = f["accounts"].join(share.filter(pl.col("asset") != "USDT"), on="account_id", how="inner").select(
        "account_id", "asset",
        (pl.col("wallet_balance") * pl.col("__share") / pl.col("asset").replace_strict(coin_mark, default=1.0))
        .round(8).alias("wallet_balance"))
    usdt_share = share.filter(pl.col("asset") != "USDT").group_by("account_id").agg(pl.col("__share").sum())
    usdt = f["accounts"].join(usdt_share, on="account_id", how="left").select(
        "account_id", pl.lit("USDT").alias("asset"),
        (pl.col("wallet_balance") * (1 - pl.col("__share").fill_null(0.0))).round(2).alias("wallet_balance"))
    # isolated-only inverse positions still need a wallet row in their coin
    needed = pos.filter(pl.col("__inv")).select("account_id", pl.col("__coin").alias("asset")).unique()
    missing = needed.join(wallets, on=["account_id", "asset"], how="anti").with_columns(
        pl.lit(0.0).alias("wallet_balance"))
    accounts = pl.concat([usdt, wallets, missing.select("account_id", "asset", "wallet_balance")])
    positions = pos.drop("__coin", "__inv", "__value", "__net").with_columns(renamed)
    out = Book.from_frames(markets=markets, tiers=tiers, accounts=accounts, positions=positions)
    out.meta["synthetic"] = {**book.meta.get("synthetic", {}), "inverse_markets": count}
    return out


def synthetic_tables(n_accounts: int, seed: int = 0, **options):
    """The four input tables (polars) of :func:`synthetic_book`."""
    return synthetic_book(n_accounts, seed=seed, **options).frames()
