"""An experiment's results and the canary window, read from real records, scores and shadow rows
(SQLite and PostgreSQL). Every figure is checked against a value computed by hand from the rows
inserted here: requests once per request, errors including fallback-rescued answers, forced rows
left out, quality judged only on a variant's own answers, outcome keys counted once, shadow
pairs joined on (request_id, row), and the tests run on exactly those observations."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from prediction_provider.db import migrate
from prediction_provider.db.modelops_models import Experiment, ShadowRecord
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.outcome_models import PredictionScore
from prediction_provider.db.session import Database
from prediction_provider.modelops import stats
from prediction_provider.modelops.results import experiment_results, window_stats
from tests.integration.database_fixtures import sqlite_url

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CONTROL: dict[str, Any] = {"of": "control", "target": "models:/m/1"}  # the control run as a shadow


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate.upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def at(minute: int, second: int = 0) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


def record(
    experiment: str, request_id: str, variant: str, minute: int, *, row: int = 0, status: str = "ok",
    served_by: str = "primary", latency: float = 10.0, label: str | None = "up",
    probabilities: dict[str, float] | None = None, unit: str | None = None, key: str | None = None,
    forced: bool = False,
) -> PredictionRecord:  # fmt: skip
    return PredictionRecord(
        request_id=request_id, row=row, created_at=at(minute), channel="predict", model_name="m",
        model_version="1" if variant == "control" else "2", role="primary", served_by=served_by,
        feature_hash="0" * 64, label=label, probabilities=probabilities, answer={"label": label},
        latency_ms=latency, status=status, experiment=experiment, variant=variant,
        target=f"models:/m/{'1' if variant == 'control' else '2'}", forced=forced, unit_hash=unit,
        outcome_key=key, fallback_reason=None if served_by == "primary" else "error",
    )  # fmt: skip


def score(
    request_id: str, realized: str, realized_return: float | None, *, row: int = 0, version: int = 1,
    current: bool = True, status: str = "scored",
) -> PredictionScore:  # fmt: skip
    return PredictionScore(
        request_id=request_id, row=row, version=version, current=current, source="outcome",
        status=status, model_name="m", realized_label=realized, realized_return=realized_return,
        bars=[], context={}, metrics={}, metric_version="1", eligible=False, score_set="organic",
        recorded_at=T0, scored_at=T0 + timedelta(hours=1),
    )  # fmt: skip


def shadow(
    experiment: str, request_id: str, variant: str, minute: int, *, row: int = 0, of: str = "shadow",
    target: str = "models:/m/3", status: str = "ok", label: str | None = "up",
    probabilities: dict[str, float] | None = None, latency: float | None = 12.0,
) -> ShadowRecord:  # fmt: skip
    return ShadowRecord(
        request_id=request_id, row=row, created_at=at(minute, 1), experiment=experiment,
        variant=variant, shadow_of=of, target=target, model_name="m", model_version=target[-1],
        label=label, probabilities=probabilities, status=status, latency_ms=latency,
    )  # fmt: skip


def ab(up: float) -> dict[str, float]:
    return {"up": up, "down": round(1 - up, 10)}


def seed_experiment(db: Database) -> Experiment:
    """Control: c1..c5 (c2 a two-row batch, c3 rescued by a fallback, c4 forced, c5 rejected and
    answered by the prior). Candidate: k1..k5 (k1 and k2 share an outcome key, k3 timed out and
    was rescued, k5 has only a void score). A shadow mirrors control traffic; the control runs as
    a shadow on candidate traffic (compare_with_control)."""
    name = f"results-{uuid.uuid4().hex[:8]}"
    experiment = Experiment(
        id=str(uuid.uuid4()), name=name, model="m", state="running",
        config={
            "variants": [
                {"name": "control", "target": "models:/m/1", "weight": 90, "control": True},
                {"name": "candidate", "target": "models:/m/2", "weight": 10, "compare_with_control": True},
            ],
            "shadow": {"target": "models:/m/3", "percent": 100},
        },
        resolved={}, weights={"control": 9000, "candidate": 1000},
    )  # fmt: skip
    e = name
    rows: list[Any] = [
        experiment,
        record(e, "c1", "control", 0, latency=10, probabilities=ab(0.8), unit="u1"),
        record(e, "c2", "control", 1, latency=20, label="down", probabilities=ab(0.3), unit="u2"),
        record(e, "c2", "control", 1, row=1, latency=20, probabilities=ab(0.6), unit="u2"),
        record(e, "c3", "control", 2, status="error", served_by="fallback:models:/m/9", latency=30,
               probabilities=ab(0.9), unit="u1"),
        record(e, "c4", "control", 3, latency=40, probabilities=ab(0.8), unit="u3", forced=True),
        record(e, "c5", "control", 4, status="rejected", served_by="prior", latency=0.5, unit="u3"),
        record(e, "k1", "candidate", 5, latency=15, probabilities=ab(0.7), unit="u4", key="EURUSD:T1"),
        record(e, "k2", "candidate", 6, latency=25, probabilities=ab(0.9), unit="u5", key="EURUSD:T1"),
        record(e, "k3", "candidate", 7, status="timeout", served_by="fallback:models:/m/1", latency=50,
               label="down", probabilities=ab(0.2), unit="u5"),
        record(e, "k4", "candidate", 8, latency=35, label="down", probabilities=ab(0.4), unit="u4"),
        record(e, "k5", "candidate", 9, latency=5, unit="u6"),
        # Outcomes: c1's first score was superseded (not current); k5's is void.
        score("c1", "down", -0.01, version=1, current=False),
        score("c1", "up", 0.01, version=2),
        score("c2", "up", 0.02),
        score("c2", "down", -0.01, row=1),
        score("c3", "up", 0.01),
        score("c4", "down", -0.01),
        score("c5", "up", 0.01),
        score("k1", "up", 0.01),
        score("k2", "up", 0.01),
        score("k3", "up", 0.01),
        score("k4", "up", 0.03),
        score("k5", "up", 0.01, status="void"),
        # The experiment's shadow on control traffic (and one on candidate traffic, dropped).
        shadow(e, "c1", "control", 0, probabilities=ab(0.6), latency=12),
        shadow(e, "c2", "control", 1, probabilities=ab(0.5), latency=14),
        shadow(e, "c2", "control", 1, row=1, status="timeout", label=None, latency=250),
        shadow(e, "c3", "control", 2, probabilities=ab(0.7), latency=16),
        shadow(e, "c4", "control", 3, probabilities=ab(0.7), latency=18),
        shadow(e, "k1", "candidate", 5, status="dropped", label=None, latency=None),
        # The control as a shadow on candidate traffic.
        shadow(e, "k1", "candidate", 5, **CONTROL, probabilities=ab(0.8), latency=11),
        shadow(e, "k4", "candidate", 8, **CONTROL, probabilities=ab(0.5), latency=13),
        shadow(e, "k5", "candidate", 9, **CONTROL, status="error", label=None, latency=3),
    ]  # fmt: skip
    with db.session() as session:
        session.add_all(rows)
    return experiment


def log_loss(p: float) -> float:
    return -math.log(p)


def brier(p_up: float, realized_up: bool) -> float:
    y = 1.0 if realized_up else 0.0
    return (p_up - y) ** 2 + ((1 - p_up) - (1 - y)) ** 2


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


def variant(results: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in results["variants"] if v["name"] == name)


def comparison(results: dict[str, Any], a: str, b: str, metric: str, design: str) -> dict[str, Any]:
    wanted = (a, b, metric, design)
    return next(c for c in results["comparisons"] if (c["a"], c["b"], c["metric"], c["design"]) == wanted)


def test_each_variant_counts_requests_errors_fallbacks_and_latency_by_hand(db: Database) -> None:
    experiment = seed_experiment(db)
    with db.session() as session:
        results = experiment_results(session, experiment)
    control, candidate = variant(results, "control"), variant(results, "candidate")
    # c1, c2 (two rows, one request), c3, c5; c4 was forced and is left out.
    assert (control["requests"], control["rows"], control["errors"], control["fallbacks"]) == (4, 5, 2, 2)
    assert control["error_rate"] == 0.5
    assert control["latency_ms"] == percentiles([10, 20, 30])  # c5 was rejected: the model never ran
    assert (candidate["requests"], candidate["errors"], candidate["fallbacks"]) == (5, 1, 1)
    assert candidate["fallback_rate"] == 0.2
    assert candidate["latency_ms"] == percentiles([15, 25, 50, 35, 5])
    assert (control["control"], candidate["control"], candidate["weight_bp"]) == (True, False, 1000)


def test_quality_uses_own_answers_current_scores_and_one_observation_per_outcome_key(db: Database) -> None:
    experiment = seed_experiment(db)
    with db.session() as session:
        results = experiment_results(session, experiment)
    control, candidate = variant(results, "control"), variant(results, "candidate")
    # Control: c1 (up, right), c2 row 0 (down, wrong), c2 row 1 (up, wrong); c3 was a fallback's
    # answer, c5 the prior's, c4 forced.
    assert control["outcomes"] == 3
    assert control["accuracy"] == pytest.approx(1 / 3)
    assert control["log_loss"] == pytest.approx((log_loss(0.8) + log_loss(0.3) + log_loss(0.4)) / 3)
    assert control["brier"] == pytest.approx((brier(0.8, True) + brier(0.3, True) + brier(0.6, False)) / 3)
    assert control["realized_return"] == pytest.approx((0.01 - 0.02 - 0.01) / 3)
    # Candidate: k1 and k2 are one observation (key EURUSD:T1), k4 another; k5's score is void.
    assert candidate["outcomes"] == 2
    assert candidate["accuracy"] == pytest.approx(0.5)
    assert candidate["log_loss"] == pytest.approx(((log_loss(0.7) + log_loss(0.9)) / 2 + log_loss(0.4)) / 2)
    assert candidate["brier"] == pytest.approx(
        ((brier(0.7, True) + brier(0.9, True)) / 2 + brier(0.4, True)) / 2
    )
    assert candidate["realized_return"] == pytest.approx((0.01 - 0.03) / 2)


def test_shadow_and_control_pairs_by_hand(db: Database) -> None:
    experiment = seed_experiment(db)
    with db.session() as session:
        results = experiment_results(session, experiment)
    mirrored = results["shadow"]
    # c1, c2/0, c2/1, c3 and k1 (c4's primary was forced). Pairs: c1 and c2/0 (c3's primary was a fallback).
    assert (mirrored["n"], mirrored["ok"], mirrored["pairs"]) == (5, 3, 2)
    assert (mirrored["error_rate"], mirrored["timeout_rate"], mirrored["drop_rate"]) == (0.0, 0.2, 0.2)
    assert mirrored["latency_ms"] == percentiles([12, 14, 250, 16])
    assert mirrored["primary_latency_ms"] == percentiles([10, 20])
    assert mirrored["agreement"] == 0.5  # up/up, then down/up
    assert mirrored["mean_tv"] == pytest.approx((0.2 + 0.2) / 2)
    # The shadow's own answers with outcomes: c1 up (up), c2/0 up (up), c3 up (up).
    assert (mirrored["outcomes"], mirrored["accuracy"]) == (3, 1.0)
    assert mirrored["log_loss"] == pytest.approx((log_loss(0.6) + log_loss(0.5) + log_loss(0.7)) / 3)
    assert mirrored["targets"] == ["models:/m/3"]
    control_pairs = results["compare_with_control"]
    assert (control_pairs["n"], control_pairs["pairs"], control_pairs["error_rate"]) == (
        3,
        2,
        pytest.approx(1 / 3),
    )
    assert control_pairs["agreement"] == 0.5  # k1 up/up, k4 down/up
    assert control_pairs["mean_tv"] == pytest.approx(0.1)


def test_paired_tests_run_on_the_pairs_and_unpaired_tests_on_the_arms(db: Database) -> None:
    experiment = seed_experiment(db)
    with db.session() as session:
        results = experiment_results(session, experiment, min_outcomes=2)
    assert results["min_n"] == 2
    # Shadow vs control on c1 and c2/0: shadow hits (1, 1), control hits (1, 0).
    mcnemar = comparison(results, "shadow", "control", "accuracy", "paired")
    assert (mcnemar["design"], mcnemar["test"], mcnemar["n"], mcnemar["statistic"]) == (
        "paired", "mcnemar_exact", 2, 1.0,
    )  # fmt: skip
    assert (mcnemar["p_value"], mcnemar["diff"], mcnemar["final"]) == (1.0, 0.5, True)
    dm = comparison(results, "shadow", "control", "log_loss", "paired")
    expected = stats.diebold_mariano([log_loss(0.6), log_loss(0.5)], [log_loss(0.8), log_loss(0.3)])
    assert (dm["test"], dm["n"], dm["diff"]) == ("diebold_mariano", 2, pytest.approx(expected.diff))
    # Candidate vs control on the candidate's rows (k1, k4): candidate hits (1, 0), control's (1, 1).
    paired = comparison(results, "candidate", "control", "accuracy", "paired")
    assert (paired["diff"], paired["p_value"], paired["n"]) == (-0.5, 1.0, 2)
    # Unpaired: candidate observations (1, 0) against control's (1, 0, 0).
    unpaired = comparison(results, "candidate", "control", "accuracy", "unpaired")
    pooled = 2 / 5
    z = (0.5 - 1 / 3) / math.sqrt(pooled * (1 - pooled) * (1 / 2 + 1 / 3))
    assert unpaired["test"] == "two_proportion_z"
    assert unpaired["statistic"] == pytest.approx(z)
    assert unpaired["p_value"] == pytest.approx(2 * scipy_stats.norm.sf(z))
    assert (unpaired["n"], unpaired["n_a"], unpaired["n_b"], unpaired["final"]) == (2, 2, 3, True)
    assert unpaired["ci_method"] == "bootstrap_clustered"
    assert unpaired["ci"][0] <= unpaired["diff"] <= unpaired["ci"][1]
    welch = comparison(results, "candidate", "control", "log_loss", "unpaired")
    candidate_losses = [(log_loss(0.7) + log_loss(0.9)) / 2, log_loss(0.4)]
    control_losses = [log_loss(0.8), log_loss(0.3), log_loss(0.4)]
    reference = scipy_stats.ttest_ind(candidate_losses, control_losses, equal_var=False)
    assert welch["p_value"] == pytest.approx(reference.pvalue)


def test_comparisons_are_not_final_below_the_minimum_sample(db: Database) -> None:
    experiment = seed_experiment(db)
    with db.session() as session:
        results = experiment_results(session, experiment)
    assert results["min_n"] == 500
    assert results["comparisons"]
    assert not any(c["final"] for c in results["comparisons"])


def test_a_time_range_limits_every_figure(db: Database) -> None:
    experiment = seed_experiment(db)
    with db.session() as session:
        results = experiment_results(session, experiment, since=at(1), until=at(5))
    assert variant(results, "control")["requests"] == 3  # c2, c3, c5
    assert variant(results, "candidate")["requests"] == 0
    assert results["compare_with_control"] is None
    assert results["shadow"]["n"] == 3  # c2/0, c2/1, c3


def test_the_canary_window_counts_fallbacks_as_errors_and_pairs_the_control(db: Database) -> None:
    experiment = seed_experiment(db)
    with db.session() as session:
        windows = window_stats(session, experiment, T0)
    candidate, control = windows["candidate"], windows["control"]
    assert (candidate.requests, candidate.errors, candidate.fallbacks) == (5, 1, 1)
    assert candidate.error_rate == 0.2
    assert candidate.latency_p99_ms == pytest.approx(percentiles([15, 25, 50, 35, 5])["p99"])
    assert (candidate.pairs, candidate.agreement, candidate.mean_tv) == (2, 0.5, pytest.approx(0.1))
    assert dict(candidate.label_counts) == {"up": 3, "down": 1}  # k1, k2, k4, k5 answered themselves
    # The control's labels: c1 up, c2 down and up, plus its shadow answers on k1 and k4 (both up).
    assert dict(control.label_counts) == {"up": 4, "down": 1}
    assert candidate.prediction_psi == pytest.approx(
        (0.75 - 0.8) * math.log(0.75 / 0.8) + (0.25 - 0.2) * math.log(0.25 / 0.2)
    )
    assert candidate.outcomes["accuracy"] == (1.0, 0.0)
    assert candidate.outcomes["log_loss"] == pytest.approx(
        ((log_loss(0.7) + log_loss(0.9)) / 2, log_loss(0.4))
    )
    assert control.outcomes["accuracy"] == (1.0, 0.0, 0.0)
    own, theirs = candidate.paired_outcomes["log_loss"]
    assert own == pytest.approx((log_loss(0.7), log_loss(0.4)))
    assert theirs == pytest.approx((log_loss(0.8), log_loss(0.5)))
    assert (control.requests, control.errors, control.pairs, control.prediction_psi) == (4, 2, 0, None)


def test_a_window_without_control_traffic_uses_the_control_shadow_latency(db: Database) -> None:
    experiment = seed_experiment(db)
    with db.session() as session:
        windows = window_stats(session, experiment, at(5), outcomes_since=T0)
    control, candidate = windows["control"], windows["candidate"]
    assert control.requests == 0
    assert control.latency_p99_ms == pytest.approx(percentiles([11, 13])["p99"])
    assert dict(control.label_counts) == {"up": 2}
    assert candidate.prediction_psi == pytest.approx(
        (0.75 - 1.0) * math.log(0.75 / 1.0) + (0.25 - 1e-4) * math.log(0.25 / 1e-4)
    )
    # Outcomes reach back to the experiment's start for the promotion gate.
    assert control.outcomes["accuracy"] == (1.0, 0.0, 0.0)


def test_a_candidate_mirrored_as_the_shadow_is_paired_with_the_control(db: Database) -> None:
    """The experiment's shadow on control traffic is the candidate's frozen version: its answers
    are the candidate's, paired with the control's."""
    name = f"mirror-{uuid.uuid4().hex[:8]}"
    experiment = Experiment(
        id=str(uuid.uuid4()), name=name, model="m", state="running",
        config={"variants": [{"name": "control", "target": "models:/m/1", "control": True},
                             {"name": "candidate", "target": "models:/m@challenger"}],
                "shadow": {"target": "models:/m@challenger", "percent": 100}},
        # Frozen when the experiment started: the alias resolved to version 2.
        resolved={"candidate": {"target": "models:/m@challenger", "reference": "models:/m/2",
                                "name": "m", "version": "2"}},
        weights={"control": 9500, "candidate": 500},
    )  # fmt: skip
    with db.session() as session:
        session.add_all([
            experiment,
            record(name, "r1", "control", 0, probabilities=ab(0.8)),
            record(name, "r2", "control", 1, label="down", probabilities=ab(0.4)),
            shadow(name, "r1", "control", 0, target="models:/m/2", label="down", probabilities=ab(0.2)),
            shadow(name, "r2", "control", 1, target="models:/m/2", label="down", probabilities=ab(0.3)),
        ])  # fmt: skip
    with db.session() as session:
        windows = window_stats(session, experiment, T0)
    candidate = windows["candidate"]
    assert (candidate.requests, candidate.pairs, candidate.agreement) == (0, 2, 0.5)
    assert candidate.mean_tv == pytest.approx((0.6 + 0.1) / 2)
    assert dict(candidate.label_counts) == {"down": 2}
