"""VOPR-lite: a hypothesis state machine drives a real marketplace (deposits, paid submits with
repeated Idempotency keys and max_cost below or above the price, completions, cancels, clock moves
and sweeps, refunds, reprices) and after every step checks the ledger against a plain-dict
reference: L1 conservation, L2 stored sums = the reference and = the journal recomputed, L3 no
flagged account negative, L6 each hold resolved at most once, L7 escrow = Σ price of live requests
and one capture per completed request, L8 legs sum to the price, the transfer count (a refused
step writes nothing), and the client's available and held. On SQLite always, on PostgreSQL under
PP_REQUIRE_SERVICES (else skipped). A failure prints the blob that replays it
(``@reproduce_failure``)."""

from __future__ import annotations

import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from prediction_provider.db.ledger_models import LedgerHead, LedgerTransfer
from prediction_provider.db.models import PredictionJob
from prediction_provider.errors import (
    Conflict,
    InsufficientFunds,
    InvalidInput,
    LedgerConflict,
    MaxCostExceeded,
    PaymentRequired,
    RateLimited,
)
from prediction_provider.ledger.checks import check_ledger
from prediction_provider.ledger.journal import Balance
from prediction_provider.marketplace.service import NotCancellable
from tests.integration.database_fixtures import sqlite_url
from tests.integration.market_world import (
    CURRENCY,
    TARGET_AFTER,
    World,
    build_world,
    postgres_copies,
    sqlite_copies,
)

M = 1_000_000  # micro-units in one unit
FEE_BPS = 1000
EVALUATOR_FEE = 50_000
PRICES = (1 * M, 1_500_000, 333_333, 2_000_001, 55_556, 50_001)
DEPOSITS = (M // 2, 1 * M, 2_500_000, 10 * M, 7)
ADVANCES = (60, 900, 1800, 3600)
MAX_OPEN = 5
SETTINGS = settings(
    # PP_LEDGER_EXAMPLES=500 for a deeper local run; CI keeps it quick.
    max_examples=int(os.environ.get("PP_LEDGER_EXAMPLES", "25")), stateful_step_count=25, deadline=None,
    database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)  # fmt: skip

Sums = list[int]  # debits_pending, debits_posted, credits_pending, credits_posted


@dataclass
class Request:
    price: int
    legs: list[tuple[str, int]]  # (leg, amount) in the order the capture writes them
    status: str
    deadline: datetime
    refunded: int = 0
    refund_keys: set[str] = field(default_factory=set)
    payees: dict[str, str] = field(default_factory=dict)


def reference_split(price: int) -> list[tuple[str, int]]:
    fee = price * FEE_BPS // 10_000
    return [("fee", fee), ("evp", EVALUATOR_FEE), ("prv", price - fee - EVALUATOR_FEE)]


def largest_remainders(amount: int, shares: list[tuple[str, int]]) -> list[tuple[str, int]]:
    total = sum(share for _, share in shares)
    parts = [amount * share // total for _, share in shares]
    remainders = sorted(range(len(shares)), key=lambda i: (-(amount * shares[i][1] % total), i))
    for i in remainders[: amount - sum(parts)]:
        parts[i] += 1
    return [(leg, part) for (leg, _), part in zip(shares, parts, strict=True)]


class LedgerMachine(RuleBasedStateMachine):
    fresh: Callable[[], tuple[World, Callable[[], None]]]  # set by the test: a new database each example
    seen: Counter[str]  # outcomes over the whole run (printed; the walk below takes every path)

    def saw(self, outcome: str) -> None:
        self.seen[outcome] += 1

    def __init__(self) -> None:
        super().__init__()
        self.world, self.drop = type(self).fresh()
        w = self.world
        self.nonce = uuid.uuid4().hex[:8]
        self.client = f"client:{w.client.user_id}"
        self.provider = f"provider:{w.provider.user_id}"
        self.evaluator = f"evaluator:{w.evaluator.user_id}"
        self.ref: dict[str, Sums] = defaultdict(lambda: [0, 0, 0, 0])
        for code, sums in w.accounts().items():
            self.ref[code] = list(sums)
        self.escrow_start = self.ref["escrow"][2] - self.ref["escrow"][0]
        self.price = w.marketplace.offers.get(w.offer_id).price.amount
        self.deposits: dict[str, int] = {}
        self.keys: dict[str, str] = {}
        self.requests: dict[str, Request] = {}
        with w.db.session() as session:
            head = session.get(LedgerHead, 1)
            assert head is not None
            self.seq = head.seq

    # -- the reference ledger ----------------------------------------------------------------------

    def single(self, debit: str, credit: str, amount: int) -> None:
        self.ref[debit][1] += amount
        self.ref[credit][3] += amount
        self.seq += 1

    def hold(self, debit: str, credit: str, amount: int) -> None:
        self.ref[debit][0] += amount
        self.ref[credit][2] += amount
        self.seq += 1

    def resolve(self, debit: str, credit: str, amount: int, *, post: bool) -> None:
        self.ref[debit][0] -= amount
        self.ref[credit][2] -= amount
        if post:
            self.ref[debit][1] += amount
            self.ref[credit][3] += amount
        self.seq += 1

    def pick(self, index: int, *statuses: str) -> tuple[str, Request] | None:
        found = [(rid, r) for rid, r in self.requests.items() if not statuses or r.status in statuses]
        return found[index % len(found)] if found else None

    def available(self) -> int:
        dp, dpo, _cp, cpo = self.ref[self.client]
        return cpo - dpo - dp

    # -- rules -------------------------------------------------------------------------------------

    @initialize(amount=st.sampled_from((0, 3 * M, 10 * M)))
    def fund(self, amount: int) -> None:
        """Most runs start with money in the wallet, so their submits get past the 402."""
        if amount:
            self.deposit(amount, 9)
        self.ledger_matches_reference()

    @rule(amount=st.sampled_from(DEPOSITS), key=st.integers(0, 3))
    def deposit(self, amount: int, key: int) -> None:
        name = f"{self.nonce}-d{key}"
        if name in self.deposits and self.deposits[name] != amount:
            with pytest.raises(LedgerConflict):
                self.world.deposit(amount, name)
            return
        answer = self.world.deposit(amount, name)
        assert answer["replayed"] == (name in self.deposits)
        self.saw("deposit: " + ("replayed" if answer["replayed"] else "posted"))
        if name not in self.deposits:
            self.deposits[name] = amount
            self.single("world", self.client, amount)

    @rule(key=st.integers(0, 5), margin=st.sampled_from((-1, 0, 1, M)), historical=st.booleans())
    def submit(self, key: int, margin: int, historical: bool = False) -> None:
        self.world.times.historical = historical
        name = f"{self.nonce}-s{key}"
        max_cost = self.price + margin
        open_requests = sum(1 for r in self.requests.values() if r.status == "pending")
        expected: type[Exception] | None = None
        if name in self.keys:
            job, created = self.world.submit(max_cost, name)
            assert (job.id, created) == (self.keys[name], False)
            self.saw("submit: replayed")
            return
        if max_cost < self.price:
            expected = MaxCostExceeded
        elif open_requests >= MAX_OPEN:
            expected = RateLimited
        elif self.available() < self.price:
            expected = InsufficientFunds
        if expected is not None:
            self.saw(f"submit: refused {expected.__name__}")
            with pytest.raises(expected) as refused:
                self.world.submit(max_cost, name)
            if expected is not RateLimited:
                assert isinstance(refused.value, PaymentRequired)  # 402 (api/errors.py)
            with self.world.db.session() as session:
                assert (
                    session.scalar(select(PredictionJob.id).where(PredictionJob.idempotency_key == name))
                    is None
                )
            return
        job, created = self.world.submit(max_cost, name)
        assert created
        assert job.price == self.price
        now = self.world.clock.now()
        if historical:  # the outcome is already recorded: the request lives request_ttl_s
            assert job.deadline_at == now + timedelta(seconds=self.world.settings.request_ttl_s)
            self.saw("submit: historical")
        else:  # results close result_margin_s before the target time
            assert job.deadline_at == now + TARGET_AFTER - timedelta(
                seconds=self.world.settings.result_margin_s
            )
        self.saw("submit: accepted")
        self.keys[name] = job.id
        self.requests[job.id] = Request(self.price, reference_split(self.price), "pending", job.deadline_at)
        self.hold(self.client, "escrow", self.price)

    @rule(index=st.integers(0, 100), by_evaluator=st.booleans())
    def complete(self, index: int, by_evaluator: bool) -> None:
        picked = self.pick(index)
        if picked is None:
            return
        rid, request = picked
        done = self.world.complete(rid, self.world.evaluator.user_id if by_evaluator else None)
        assert done == (request.status == "pending")
        if not done:
            return
        self.saw("complete: captured")
        request.status = "completed"
        self.resolve(self.client, "escrow", request.price, post=True)
        payees = {"fee": "platform:fees", "evp": self.evaluator if by_evaluator else "platform:fees",
                  "prv": self.provider}  # fmt: skip
        for leg, amount in request.legs:
            if amount > 0:
                self.single("escrow", payees[leg], amount)
                request.payees[leg] = payees[leg]

    @rule(index=st.integers(0, 100))
    def cancel(self, index: int) -> None:
        picked = self.pick(index)
        if picked is None:
            return
        rid, request = picked
        if request.status != "pending":
            with pytest.raises(NotCancellable):
                self.world.marketplace.cancel(self.world.client, rid, see_all=False)
            return
        job = self.world.marketplace.cancel(self.world.client, rid, see_all=False)
        assert job.status == "cancelled"
        self.saw("cancel: voided")
        request.status = "cancelled"
        self.resolve(self.client, "escrow", request.price, post=False)

    @rule(seconds=st.sampled_from(ADVANCES))
    def advance_and_sweep(self, seconds: int) -> None:
        now = self.world.clock.advance(seconds)
        counts = self.world.marketplace.sweeper.sweep()
        overdue = [r for r in self.requests.values() if r.status == "pending" and r.deadline <= now]
        for request in overdue:
            self.saw("sweep: expired a request")
            request.status = "expired"
            self.resolve(self.client, "escrow", request.price, post=False)
        assert counts["expired"] == len(overdue), counts
        assert counts["voided"] == 0, counts  # every hold was resolved with its request

    @rule(
        index=st.integers(0, 100),
        amount=st.one_of(st.none(), st.integers(0, 2_100_000)),
        key=st.integers(0, 2),
    )
    def refund(self, index: int, amount: int | None, key: int) -> None:
        picked = self.pick(index)
        if picked is None:
            return
        rid, request = picked
        name = f"r{key}"
        remaining = request.price - request.refunded
        wanted = remaining if amount is None else amount
        if name in request.refund_keys:
            answer = self.world.marketplace.refund(self.world.admin, rid, amount, "test", name)
            assert answer["transfers"], answer  # the first refund's transfers, nothing new
            return
        if request.status != "completed" or wanted <= 0 or wanted > remaining:
            with pytest.raises(Conflict):
                self.world.marketplace.refund(self.world.admin, rid, amount, "test", name)
            return
        answer = self.world.marketplace.refund(self.world.admin, rid, amount, "test", name)
        assert answer["refunded"] == wanted
        shares = largest_remainders(wanted, [(leg, a) for leg, a in request.legs if a > 0])
        for leg, share in shares:
            if share > 0:
                self.single(request.payees[leg], self.client, share)
        self.saw("refund: " + ("full" if wanted == request.price else "partial"))
        request.refunded += wanted
        request.refund_keys.add(name)

    @rule(price=st.sampled_from(PRICES))
    def reprice(self, price: int) -> None:
        if price - price * FEE_BPS // 10_000 < EVALUATOR_FEE:  # the provider would get less than nothing
            with pytest.raises(InvalidInput):
                self.world.marketplace.offers.reprice(self.world.provider, self.world.offer_id, price)
            return
        self.world.marketplace.offers.reprice(self.world.provider, self.world.offer_id, price)
        self.price = price

    # -- after every step --------------------------------------------------------------------------

    @invariant()
    def ledger_matches_reference(self) -> None:
        w = self.world
        with w.db.session() as session:
            report = check_ledger(session)
            assert report.ok, report.violations
            head = session.get(LedgerHead, 1)
            assert head is not None
            assert head.seq == self.seq, "a step wrote transfers the reference did not expect"
            twice = session.execute(
                select(LedgerTransfer.pending_id, func.count())
                .where(LedgerTransfer.pending_id.is_not(None))
                .group_by(LedgerTransfer.pending_id)
                .having(func.count() > 1)
            ).all()
            assert not twice, f"L6: holds resolved more than once: {twice}"
            rids = list(self.requests)
            statuses = dict(
                session.execute(
                    select(PredictionJob.id, PredictionJob.status).where(PredictionJob.id.in_(rids))
                ).all()
            )
            transfers = session.execute(
                select(LedgerTransfer.request_id, LedgerTransfer.kind, LedgerTransfer.id,
                       LedgerTransfer.amount)
                .where(LedgerTransfer.request_id.in_(rids))
            ).all()  # fmt: skip
            client = Balance.of(w.ledger.journal.find(session, self.client, CURRENCY))
        stored = w.accounts()
        for code in set(stored) | set(self.ref):
            assert list(stored.get(code, (0, 0, 0, 0))) == self.ref[code], f"L2: {code}"
        for part in (0, 1):  # L1: pending and posted, separately
            assert sum(s[part] for s in stored.values()) == sum(s[part + 2] for s in stored.values())
        for code, (dp, dpo, _cp, cpo) in stored.items():  # L3
            if code != "world":
                assert dp + dpo <= cpo, f"L3: {code} overdrawn"
        by_request: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        for request_id, kind, tid, amount in transfers:
            by_request[str(request_id)].append((kind, tid, amount))
        live = 0
        for rid, request in self.requests.items():
            assert statuses[rid] == request.status, rid
            kinds = [kind for kind, _, _ in by_request[rid]]
            assert kinds.count("capture") == (1 if request.status == "completed" else 0), (rid, kinds)  # L7
            assert kinds.count("void") == (1 if request.status in ("cancelled", "expired") else 0), (
                rid,
                kinds,
            )
            if request.status == "pending":
                live += request.price
            if request.status == "completed":  # L8
                legs = [
                    a
                    for kind, _, a in by_request[rid]
                    if kind in ("fee", "payout_evaluator", "payout_provider")
                ]
                assert sum(legs) == request.price, (rid, legs)
                refunded = sum(a for kind, _, a in by_request[rid] if kind == "refund")
                assert refunded == request.refunded <= request.price
        escrow = stored.get("escrow", (0, 0, 0, 0))
        assert escrow[2] - escrow[0] - self.escrow_start == live, "L7: escrow ≠ Σ live prices"
        dp, dpo, _cp, cpo = self.ref[self.client]
        assert (client.available, client.held) == (cpo - dpo - dp, dp)

    def teardown(self) -> None:
        self.drop()


Fresh = Callable[[], tuple[World, Callable[[], None]]]


def copies(url: str, data_dir: Path) -> tuple[World, Fresh]:
    """A template world (migrated, with its people and offer) and a maker of fresh copies of it:
    every example starts from the same database, so a failing one replays and shrinks alike."""
    template = build_world(url, data_dir, price=PRICES[0], evaluator_fee=EVALUATOR_FEE,
                           platform_fee_bps=FEE_BPS, max_open_requests=MAX_OPEN)  # fmt: skip
    if url.startswith("sqlite"):
        return template, sqlite_copies(template, data_dir)
    return template, postgres_copies(template)


def walk_every_path(url: str, data_dir: Path) -> None:
    """The same rules and checks in one fixed order that takes every path at least once (random
    runs may, by chance, leave one out)."""
    template, fresh = copies(url, data_dir)
    LedgerMachine.fresh, LedgerMachine.seen = fresh, Counter()
    m = LedgerMachine()
    try:
        steps = [
            lambda: m.submit(0, 0),  # nothing in the wallet: 402
            lambda: m.deposit(3 * M, 0), lambda: m.deposit(3 * M, 0), lambda: m.deposit(7, 0),
            lambda: m.submit(0, -1),  # max_cost below the price: 402
            lambda: m.submit(0, 0), lambda: m.submit(0, M), lambda: m.submit(1, 1, True),
            lambda: m.submit(2, 0),
            lambda: m.complete(0, True), lambda: m.complete(0, True), lambda: m.complete(1, False),
            lambda: m.cancel(2), lambda: m.cancel(2), lambda: m.cancel(0),
            lambda: m.refund(0, 100_001, 0), lambda: m.refund(0, 100_001, 0), lambda: m.refund(0, None, 1),
            lambda: m.refund(0, 1, 2), lambda: m.refund(1, None, 0), lambda: m.refund(2, None, 0),
            lambda: m.reprice(333_333), lambda: m.reprice(50_001), lambda: m.submit(3, 0),
            lambda: m.deposit(10 * M, 1), *[lambda k=k: m.submit(k, 0) for k in range(3, 9)],  # the cap: 429
            lambda: m.advance_and_sweep(60), lambda: m.advance_and_sweep(3600), lambda: m.submit(5, 0),
            lambda: m.submit(9, 0, True), lambda: m.advance_and_sweep(60), lambda: m.advance_and_sweep(900),
        ]  # fmt: skip
        for step in steps:
            step()
            m.ledger_matches_reference()
        wanted = ["submit: accepted", "submit: replayed", "submit: refused MaxCostExceeded",
                  "submit: refused InsufficientFunds", "submit: refused RateLimited", "deposit: posted",
                  "deposit: replayed", "submit: historical", "complete: captured", "cancel: voided",
                  "sweep: expired a request",
                  "refund: full", "refund: partial"]  # fmt: skip
        assert [o for o in wanted if not m.seen[o]] == [], dict(m.seen)
    finally:
        m.teardown()
        template.close()


def run_machine(url: str, data_dir: Path) -> None:
    template, fresh = copies(url, data_dir)
    try:
        LedgerMachine.fresh, LedgerMachine.seen = fresh, Counter()
        run_state_machine_as_test(LedgerMachine, settings=SETTINGS)
        print("outcomes:", dict(LedgerMachine.seen))  # with -s: what the run exercised
    finally:
        template.close()


def test_ledger_state_machine_sqlite(tmp_path: Path) -> None:
    run_machine(sqlite_url(tmp_path), tmp_path)


def test_ledger_state_machine_postgres(postgres_url: str, tmp_path: Path) -> None:
    run_machine(postgres_url, tmp_path)


def test_every_path_once_sqlite(tmp_path: Path) -> None:
    walk_every_path(sqlite_url(tmp_path), tmp_path)


def test_every_path_once_postgres(postgres_url: str, tmp_path: Path) -> None:
    walk_every_path(postgres_url, tmp_path)
