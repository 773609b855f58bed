"""Sticky assignment: deterministic buckets, weights that add up, and monotone ramps."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from prediction_provider.modelops.assignment import BUCKETS, Layout, basis_points, bucket, shadow_sampled

ORDER = ("control", "a", "b")


def test_bucket_is_a_pure_function_of_salt_and_unit() -> None:
    assert bucket("salt", "client-1") == bucket("salt", "client-1")
    assert 0 <= bucket("salt", "client-1") < BUCKETS
    # Different salts draw independent cohorts: over 2,000 units most buckets differ.
    differing = sum(bucket("s1", f"u{i}") != bucket("s2", f"u{i}") for i in range(2000))
    assert differing > 1990


def test_basis_points_sum_to_ten_thousand_and_cap_each_candidate_at_its_slot() -> None:
    assert basis_points({"control": 90, "a": 10}, "control", ("control", "a")) == {"control": 9000, "a": 1000}
    points = basis_points({"control": 10, "a": 45, "b": 45}, "control", ORDER)
    assert sum(points.values()) == BUCKETS
    assert points["a"] == points["b"] == 4500
    # Three variants: a candidate's slot is half the buckets; asking more is capped.
    capped = basis_points({"control": 0, "a": 80, "b": 20}, "control", ORDER)
    assert (capped["a"], capped["b"], capped["control"]) == (5000, 2000, 3000)


def test_assignment_shares_follow_the_weights() -> None:
    layout = Layout.of(("control", "a"), "control", {"control": 7500, "a": 2500})
    shares = Counter(layout.variant(bucket("exp", f"client-{i}")) for i in range(20_000))
    assert abs(shares["a"] / 20_000 - 0.25) < 0.015


@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000))
def test_ramps_are_monotone_no_unit_jumps_between_candidates(a1: int, b1: int, a2: int, b2: int) -> None:
    before = Layout.of(ORDER, "control", {"a": a1, "b": b1})
    after = Layout.of(ORDER, "control", {"a": a2, "b": b2})
    for point in range(0, BUCKETS, 7):
        old, new = before.variant(point), after.variant(point)
        if old != new:
            assert "control" in (old, new)  # moves only between the control and one candidate
        if old == "a" and a2 >= a1:
            assert new == "a"  # raising a's weight keeps everyone already on it


def test_a_single_canary_can_take_all_traffic() -> None:
    layout = Layout.of(("control", "canary"), "control", {"canary": BUCKETS})
    assert {layout.variant(point) for point in range(BUCKETS)} == {"canary"}


def test_shadow_sampling_is_deterministic_and_proportional() -> None:
    sampled = [shadow_sampled("exp", f"u{i}", 30) for i in range(10_000)]
    assert sampled == [shadow_sampled("exp", f"u{i}", 30) for i in range(10_000)]
    assert abs(sum(sampled) / 10_000 - 0.30) < 0.02
    assert all(shadow_sampled("exp", f"u{i}", 100) for i in range(100))
    assert not any(shadow_sampled("exp", f"u{i}", 0) for i in range(100))
