"""Deterministic, sticky assignment of a unit (a client) to an experiment variant.

No state: a unit's bucket is a hash of the experiment's salt and the unit, so every worker, after
every restart and on every protocol, puts the same unit in the same variant.

Layout (monotone ramps): buckets are 0..9999. With k variants, non-control variant j (j = 1..k-1
in declared order) owns ``[a_j, a_j + w_j)`` with ``a_j = (j-1)·⌊10000/(k-1)⌋`` and
``w_j ≤ ⌊10000/(k-1)⌋``; the control owns the rest. Raising w_j only moves units from the control
to j, lowering it only moves them back, and no unit ever jumps between two non-control variants:
a client on the candidate at 10 % is still on it at 30 %. With one candidate it can go 0 → 100 %.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BUCKETS = 10_000


def bucket(salt: str, unit: str) -> int:
    """``int(SHA-256(salt + ":" + unit)[:8]) mod 10000``."""
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def shadow_sampled(salt: str, key: str, percent: float) -> bool:
    """A deterministic ``percent`` of units (or requests) get a shadow call."""
    if percent >= 100:
        return True
    digest = hashlib.sha256(f"{salt}:shadow:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS < round(percent * 100)


def unit_hash(secret: bytes, unit: str) -> str:
    """What records keep of a unit: an HMAC with a server secret, never the raw key."""
    return hmac.new(secret, unit.encode(), hashlib.sha256).hexdigest()[:32]


def slot_width(variants: int) -> int:
    """The most basis points one non-control variant can own."""
    return BUCKETS // max(variants - 1, 1)


def basis_points(weights: Mapping[str, float], control: str, order: Sequence[str]) -> dict[str, int]:
    """Weights (any positive scale, ≤ 2 decimals) normalized to basis points. A non-control
    variant gets at most its slot; the control gets the rest, so the total is exactly 10 000."""
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("weights must not all be zero")
    width = slot_width(len(order))
    points = {name: min(width, round(weights[name] * BUCKETS / total)) for name in order if name != control}
    points[control] = BUCKETS - sum(points.values())
    return {name: points[name] for name in order}


@dataclass(frozen=True, slots=True)
class Layout:
    """Bucket ranges of the non-control variants, in declared order; everything else is control."""

    control: str
    ranges: tuple[tuple[str, int, int], ...]  # (variant, start, end) with start ≤ bucket < end

    @classmethod
    def of(cls, order: Sequence[str], control: str, points: Mapping[str, int]) -> Layout:
        others = [name for name in order if name != control]
        width = slot_width(len(order))
        ranges = []
        for index, name in enumerate(others):
            start = index * width
            ranges.append((name, start, start + min(points.get(name, 0), width)))
        return cls(control, tuple(ranges))

    def variant(self, point: int) -> str:
        for name, start, end in self.ranges:
            if start <= point < end:
                return name
        return self.control
