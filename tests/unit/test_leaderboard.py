"""The leaderboard (design 3.9) built from hand-made score rows: ranking, eligibility, ties, digest,
intervals, pooling, baselines, IC, Sharpe and ECE, each against an independent reference."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import brier_score_loss

from prediction_provider.outcomes.leaderboard import ScoredRecord, build_leaderboard, canonical_json
from prediction_provider.outcomes.metrics import (
    direction_metrics,
    quantile_metrics,
    return_metrics,
    signal_metrics,
)

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class Rows:
    """Builds score rows with increasing score ids."""

    def __init__(self) -> None:
        self.next_id = 1
        self.rows: list[ScoredRecord] = []

    def add(
        self,
        model: str,
        metrics: Mapping[str, Any] | None,
        *,
        as_of: datetime,
        version: str | None = "1",
        provider: str | None = "alice",
        symbol: str = "EURUSD",
        base_rate: float = 0.5,
        last_up: bool = True,
        periods_per_year: float = 252.0,
        price: int | None = None,
        scored_after: timedelta = DAY + HOUR,
    ) -> ScoredRecord:
        row = ScoredRecord(
            score_id=self.next_id,
            model_name=model,
            model_version=version,
            provider=provider,
            symbol=symbol,
            horizon=1,
            as_of=as_of,
            target_time=as_of + DAY,
            scored_at=as_of + scored_after,
            metrics=metrics or {},
            context={"base_rate": base_rate, "last_up": last_up, "periods_per_year": periods_per_year},
            price=price,
        )
        self.next_id += 1
        self.rows.append(row)
        return row


def direction(p: float, up: bool) -> dict[str, Any]:
    out = direction_metrics(p, 0.01 if up else -0.01)
    assert out is not None
    return out


def by_key(board: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["key"]: e for e in [*board["entries"], *board["provisional"]]}


def forecasters(seed: int = 11, n: int = 60) -> tuple[Rows, np.ndarray, np.ndarray]:
    """A sharp model, a contrarian one and a noisy one on the same 60 outcomes over 12 days."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    base = rng.uniform(0.35, 0.65, n)
    rows = Rows()
    for i in range(n):
        as_of = START + (i % 12) * DAY + (i // 12) * HOUR
        up = bool(y[i])
        common = {"as_of": as_of, "base_rate": float(base[i]), "last_up": bool(i % 3)}
        rows.add("sharp", direction(0.8 if up else 0.2, up), **common)
        rows.add("contrarian", direction(0.3 if up else 0.7, up), **common)
        rows.add("noisy", direction(float(rng.uniform(0.0, 1.0)), up), **common)
    return rows, y, base


def test_better_model_ranks_above_worse_by_brier_skill_score() -> None:
    rows, y, base = forecasters()
    board = build_leaderboard(rows.rows, target="direction")
    order = [e["key"] for e in board["entries"]]
    assert order[0] == "sharp@1"
    assert order[-1] == "contrarian@1"
    assert [e["rank"] for e in board["entries"]] == [1, 2, 3]
    sharp = by_key(board)["sharp@1"]
    p = np.where(y == 1, 0.8, 0.2)
    reference = 1.0 - brier_score_loss(y, p) / brier_score_loss(y, base)
    assert sharp["primary"]["metric"] == "bss"
    assert sharp["primary"]["value"] == pytest.approx(reference, abs=1e-12)
    assert sharp["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    # the interval is mean ± 1.96 sd/√n of the brier improvements scaled by the mean reference brier
    ref = (base - y) ** 2
    d = (ref - (p - y) ** 2) / ref.mean()
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert sharp["primary"]["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-12)
    assert by_key(board)["contrarian@1"]["primary"]["value"] < 0.0
    assert sharp["n"] == 60
    assert sharp["days"] == 12


def test_too_few_records_or_days_are_provisional_without_rank() -> None:
    rows, _, _ = forecasters()
    for i in range(29):  # one short of min_n
        rows.add("young", direction(0.8, True), as_of=START + (i % 10) * DAY)
    for i in range(40):  # enough records, on 4 days only
        rows.add("bursty", direction(0.8, True), as_of=START + (i % 4) * DAY)
    board = build_leaderboard(rows.rows, target="direction", min_n=30, min_days=5)
    provisional = {e["key"]: e for e in board["provisional"]}
    assert set(provisional) == {"young@1", "bursty@1"}
    assert all(e["rank"] is None for e in provisional.values())
    assert provisional["young@1"]["provisional_reason"] == "n 29 < min_n 30"
    assert provisional["bursty@1"]["provisional_reason"] == "days 4 < min_days 5"
    assert [e["rank"] for e in board["entries"]] == [1, 2, 3]
    loose = build_leaderboard(rows.rows, target="direction", min_n=29, min_days=4)
    assert {e["key"] for e in loose["entries"]} >= {"young@1", "bursty@1"}
    assert loose["provisional"] == []


def test_ties_break_by_n_then_first_scored_then_key() -> None:
    rows = Rows()
    # every record a p = 0.75 hit against a 0.5 base rate: BSS is exactly 0.75 for every model
    plan = {
        "few": (30, DAY),
        "many": (60, DAY),
        "early": (30, HOUR),
        "b-twin": (30, DAY),
        "a-twin": (30, DAY),
    }
    for model, (count, scored_after) in plan.items():
        for i in range(count):
            rows.add(model, direction(0.75, True), as_of=START + (i % 6) * DAY, scored_after=scored_after)
    board = build_leaderboard(rows.rows, target="direction")
    assert {e["primary"]["value"] for e in board["entries"]} == {0.75}
    assert [e["key"] for e in board["entries"]] == ["many@1", "early@1", "a-twin@1", "b-twin@1", "few@1"]
    assert [e["rank"] for e in board["entries"]] == [1, 2, 3, 4, 5]


def test_digest_is_stable_under_shuffling_and_changes_with_one_score() -> None:
    rows, _, _ = forecasters()
    board = build_leaderboard(rows.rows, target="direction")
    shuffled = list(rows.rows)
    random.Random(5).shuffle(shuffled)
    again = build_leaderboard(shuffled, target="direction")
    assert again["digest"] == board["digest"]
    assert canonical_json(again) == canonical_json(board)
    body = {k: board[k] for k in ("entries", "provisional", "baselines")}
    assert board["digest"] == __import__("hashlib").sha256(canonical_json(body)).hexdigest()
    changed = list(rows.rows)
    first = changed[0]
    changed[0] = replace(first, metrics=direction(0.79, bool(first.metrics["y"])))
    assert build_leaderboard(changed, target="direction")["digest"] != board["digest"]


def test_duplicate_score_ids_are_refused() -> None:
    rows, _, _ = forecasters()
    with pytest.raises(ValueError, match="unique"):
        build_leaderboard([*rows.rows, rows.rows[0]], target="direction")


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    p = k / n
    centre = (2 * n * p + z * z) / (2 * (n + z * z))
    half = z * math.sqrt(z * z + 4 * n * p * (1 - p)) / (2 * (n + z * z))
    return [centre - half, centre + half]


def test_hit_rate_has_a_wilson_interval_and_ignores_abstentions() -> None:
    rows = Rows()
    outcomes = [(0.9, True)] * 23 + [(0.9, False)] * 9 + [(0.5, True)] * 8
    for i, (p, up) in enumerate(outcomes):
        rows.add("m", direction(p, up), as_of=START + (i % 8) * DAY)
    entry = build_leaderboard(rows.rows, target="direction")["entries"][0]
    assert entry["hit_rate"]["n"] == 32
    assert entry["hit_rate"]["value"] == pytest.approx(23 / 32, abs=1e-12)
    assert entry["hit_rate"]["ci95"] == pytest.approx(wilson(23, 32), abs=1e-12)
    assert entry["n"] == 40


def test_ece_matches_a_binned_reference() -> None:
    rows, _, _ = forecasters(seed=3, n=200)
    noisy = [r for r in rows.rows if r.model_name == "noisy"]
    board = build_leaderboard(noisy, target="direction")
    p = np.array([r.metrics["p"] for r in noisy])
    y = np.array([r.metrics["y"] for r in noisy])
    reference = 0.0
    for b in range(10):
        in_bin = [i for i in range(p.size) if min(int(p[i] * 10), 9) == b]
        if in_bin:
            reference += len(in_bin) / p.size * abs(y[in_bin].mean() - p[in_bin].mean())
    assert board["entries"][0]["ece"] == pytest.approx(reference, abs=1e-12)
    assert board["entries"][0]["ece"] > 0.0


def test_baselines_are_scored_on_the_same_records() -> None:
    rows, y, base = forecasters()
    rows.add("orphan", direction(0.6, True), as_of=START, provider=None)  # still in the baselines' union
    y = np.append(y, 1)
    base = np.append(base, 0.5)
    last_up = np.append([bool(i % 3) for i in range(60)], True)
    board = build_leaderboard(rows.rows, target="direction", group="provider")
    baselines = board["baselines"]
    assert baselines["coin_flip"]["brier"] == 0.25
    assert baselines["coin_flip"]["hit_rate"]["n"] == 0  # p = 0.5 always abstains
    # every forecaster answered the same 60 outcomes, so each appears three times
    y3, base3 = (
        np.concatenate([np.repeat(y[:60], 3), y[60:]]),
        np.concatenate([np.repeat(base[:60], 3), base[60:]]),
    )
    up3 = np.concatenate([np.repeat(last_up[:60], 3), last_up[60:]])
    assert baselines["base_rate"]["n"] == 181
    assert baselines["base_rate"]["brier"] == pytest.approx(brier_score_loss(y3, base3), abs=1e-12)
    assert baselines["base_rate"]["bss"] == pytest.approx(0.0, abs=1e-12)
    persistence = np.where(up3, 0.6, 0.4)
    assert baselines["persistence"]["brier"] == pytest.approx(brier_score_loss(y3, persistence), abs=1e-12)
    # paired delta vs coin flip: 0.25 minus the entry's brier, per record
    sharp_rows = [r for r in rows.rows if r.model_name == "sharp"]
    single = build_leaderboard(sharp_rows, target="direction")["entries"][0]
    assert single["delta_vs_baselines"]["coin_flip"]["mean"] == pytest.approx(0.25 - 0.04, abs=1e-12)


def test_provider_groups_pool_records_of_all_its_models() -> None:
    rows = Rows()
    rng = np.random.default_rng(8)
    for i in range(90):
        up = bool(rng.integers(0, 2))
        as_of = START + (i % 9) * DAY
        rows.add("a", direction(float(rng.uniform()), up), as_of=as_of, provider="alice")
        if i < 30:
            rows.add("b", direction(float(rng.uniform()), up), as_of=as_of, provider="alice", version="2")
        rows.add("c", direction(float(rng.uniform()), up), as_of=as_of, provider="bob")
        rows.add("d", direction(float(rng.uniform()), up), as_of=as_of, provider=None)
    board = build_leaderboard(rows.rows, target="direction", group="provider")
    entries = by_key(board)
    assert set(entries) == {"alice", "bob"}
    alice = entries["alice"]
    assert alice["n"] == 120
    assert alice["models"] == ["a@1", "b@2"]
    assert alice["model_name"] is None
    pooled = [r.metrics["brier"] for r in rows.rows if r.provider == "alice"]
    assert alice["brier"] == pytest.approx(float(np.mean(pooled)), abs=1e-12)  # weighted by prediction
    pooled_ref = [(r.context["base_rate"] - r.metrics["y"]) ** 2 for r in rows.rows if r.provider == "alice"]
    assert alice["primary"]["value"] == pytest.approx(1.0 - np.mean(pooled) / np.mean(pooled_ref), abs=1e-12)
    models = by_key(build_leaderboard(rows.rows, target="direction"))
    mean_of_models = (models["a@1"]["primary"]["value"] + models["b@2"]["primary"]["value"]) / 2
    assert alice["primary"]["value"] != pytest.approx(mean_of_models, abs=1e-6)  # pooled, not averaged
    assert board["baselines"]["coin_flip"]["n"] == 300  # records without a provider included


def return_rows(periods: int, symbols: int, seed: int = 9) -> Rows:
    rng = np.random.default_rng(seed)
    rows = Rows()
    for t in range(periods):
        for s in range(symbols):
            realized = float(rng.normal(0.0, 0.01))
            expected = round(realized + float(rng.normal(0.0, 0.01)), 3)  # rounding makes rank ties
            rows.add("m", return_metrics(expected, realized), as_of=START + t * DAY, symbol=f"S{s}")
    return rows


def test_cross_sectional_ic_is_the_mean_daily_spearman() -> None:
    rows = return_rows(periods=12, symbols=6)
    entry = build_leaderboard(rows.rows, target="return")["entries"][0]
    daily = []
    for t in range(12):
        day = [r for r in rows.rows if r.as_of == START + t * DAY]
        daily.append(spearmanr([r.metrics["expected"] for r in day], [r.metrics["realized"] for r in day])[0])
    assert entry["ic_method"] == "cross_sectional"
    assert entry["primary"]["metric"] == "ic"
    assert entry["ic"] == pytest.approx(float(np.mean(daily)), abs=1e-12)
    assert entry["icir"] == pytest.approx(float(np.mean(daily) / np.std(daily, ddof=1)), abs=1e-12)


def test_few_symbols_fall_back_to_time_series_spearman() -> None:
    rows = return_rows(periods=20, symbols=4)
    entry = build_leaderboard(rows.rows, target="return")["entries"][0]
    rho = spearmanr([r.metrics["expected"] for r in rows.rows], [r.metrics["realized"] for r in rows.rows])[0]
    assert entry["ic_method"] == "time_series"
    assert entry["ic"] == pytest.approx(float(rho), abs=1e-12)
    assert entry["icir"] is None


def test_signal_sharpe_needs_twenty_periods() -> None:
    short = build_leaderboard(return_rows(periods=19, symbols=2).rows, target="return", min_days=1)
    assert short["entries"][0]["signal_sharpe"] is None
    rows = return_rows(periods=25, symbols=2)
    entry = build_leaderboard(rows.rows, target="return")["entries"][0]
    per_period = [
        np.mean([r.metrics["signal_return"] for r in rows.rows if r.as_of == START + t * DAY])
        for t in range(25)
    ]
    reference = np.mean(per_period) / np.std(per_period, ddof=1) * math.sqrt(252.0)
    assert entry["signal_sharpe"] == pytest.approx(float(reference), abs=1e-9)
    zero = build_leaderboard(rows.rows, target="return")["baselines"]["zero_return"]
    assert zero["squared_error"] == pytest.approx(
        float(np.mean([r.metrics["realized"] ** 2 for r in rows.rows]))
    )


def test_quantile_and_signal_boards_rank_lower_loss_first() -> None:
    rows = Rows()
    rng = np.random.default_rng(10)
    for i in range(40):
        r = float(rng.normal(0.0, 0.01))
        as_of = START + (i % 8) * DAY
        rows.add("tight", quantile_metrics({0.1: r - 0.001, 0.5: r, 0.9: r + 0.001}, r), as_of=as_of)
        rows.add("wide", quantile_metrics({0.1: -0.2, 0.5: 0.1, 0.9: 0.3}, r), as_of=as_of)
    board = build_leaderboard(rows.rows, target="quantiles")
    assert [e["key"] for e in board["entries"]] == ["tight@1", "wide@1"]
    assert board["entries"][0]["coverage"]["value"] == 1.0
    signals = Rows()
    for i in range(40):
        truth = {"buy": i % 2, "sell": 1 - i % 2}
        as_of = START + (i % 8) * DAY
        signals.add(
            "right", signal_metrics(truth, truth, {"buy": 0.9 * truth["buy"], "sell": 0.5}), as_of=as_of
        )
        signals.add("wrong", signal_metrics({"buy": 1, "sell": 1}, truth), as_of=as_of)
    board = build_leaderboard(signals.rows, target="entry_signal")
    entries = by_key(board)
    assert entries["right@1"]["primary"]["metric"] == "brier"
    assert entries["wrong@1"]["primary"]["metric"] == "error_rate"
    assert entries["wrong@1"]["primary"]["value"] == pytest.approx(0.5, abs=1e-12)
    assert [e["rank"] for e in board["entries"]] == [1, 2]


def test_undefined_metrics_become_null_and_the_board_is_json() -> None:
    rows = Rows()
    for i in range(40):  # the base rate says "certainly up" and it always is: BSS has no reference
        rows.add("m", direction(0.9, True), as_of=START + (i % 8) * DAY, base_rate=1.0)
    rows.add("m", None, as_of=START + 9 * DAY)  # a flat outcome: excluded
    board = build_leaderboard(rows.rows, target="direction")
    assert board["entries"] == []
    assert board["provisional"][0]["primary"]["value"] is None
    assert board["provisional"][0]["provisional_reason"] == "primary metric undefined"
    assert board["n_records"] == 40
    assert board["n_excluded"] == 1
    assert board["scores_through"] == (START + 9 * DAY + DAY + HOUR).isoformat()
    json.dumps(board, allow_nan=False)


def test_fill_rate_and_average_price_of_paid_requests() -> None:
    rows = Rows()
    for i in range(40):
        rows.add("m", direction(0.7, True), as_of=START + (i % 8) * DAY, price=[2500, 3000, None][i % 3])
    board = build_leaderboard(rows.rows, target="direction", fill_rates={"m@1": 0.95})
    entry = board["entries"][0]
    paid = [[2500, 3000, None][i % 3] for i in range(40)]
    mean_micros = np.mean([p for p in paid if p is not None])
    assert entry["avg_price"] == f"{mean_micros / 1e6:.8f}".rstrip("0")
    assert entry["fill_rate"] == 0.95
    free = build_leaderboard([replace(r, price=None) for r in rows.rows], target="direction")
    assert free["entries"][0]["avg_price"] is None
    assert free["entries"][0]["fill_rate"] is None


def test_naive_datetimes_are_refused() -> None:
    rows = Rows()
    row = rows.add("m", direction(0.7, True), as_of=START)
    with pytest.raises(ValueError, match="timezone"):
        build_leaderboard([replace(row, as_of=row.as_of.replace(tzinfo=None))], target="direction")
