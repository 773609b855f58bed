"""Synchronous paid predictions: a priced model's answer is charged to the caller's wallet and
durable before the response leaves, at close to the unpaid throughput.

A model is priced when it has an active offer executed by the platform (the cheapest, when it has
several); each answered row costs the offer's price. The design is a **credit line plus group
commit**:

* before the model runs, :meth:`PaidCalls.reserve` checks the caller's wallet against an in-memory
  copy of its available balance minus what this process has reserved and not yet written, so a
  caller who cannot pay gets 402 without the model running and without a database round trip;
* after the answer, :meth:`PaidCalls.commit` hands the charge to one writer thread and waits for
  it. The writer takes everything queued, takes the journal lock, re-reads each wallet, charges
  what the wallets cover (one posted transfer per answer, ``chg:{id}``, from the client to the
  provider, and one per provider and batch, ``chgfee:{first id}``, that takes the platform's
  share of those answers, each floored as everywhere else), writes them with one multi-row insert,
  commits, then wakes the waiting requests. One commit carries many answers, which is what keeps
  paid calls near the unpaid rate.

The database stays the authority: another process may have spent the same money, so a charge the
wallet no longer covers when it is written is refused (the request answers 402, its answer is
not sent), and a wallet never goes negative. An answer is only sent after its charge committed,
so a SIGKILL loses no answered charge, and the charge ids (the answer's request id) are unique,
so nothing is charged twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from prediction_provider.accounts.principal import Principal
from prediction_provider.clock import Clock
from prediction_provider.db.market_models import Offer, OfferPrice
from prediction_provider.db.models import PredictionJob
from prediction_provider.db.session import Database
from prediction_provider.errors import InsufficientFunds, PaymentRequired
from prediction_provider.ledger.journal import Journal, Single
from prediction_provider.ledger.money import format_amount, split

log = logging.getLogger(__name__)
MAX_BATCH = 1024
# How long the writer waits for answers still being computed to join a batch. A batch's fixed cost
# is a few statements; waiting until every paid request in flight is queued (or this long) makes
# batches as large as the concurrency, and each request waits at most this much longer.
LINGER_S = 0.005


@dataclass(frozen=True, slots=True)
class Tariff:
    model_name: str
    offer_id: str
    price_id: str
    amount: int  # per answered row
    fee_bps: int
    provider_id: int
    currency: str


@dataclass(slots=True)
class Charge:
    charge_id: str
    user_id: int
    tariff: Tariff
    amount: int
    done: threading.Event = field(default_factory=threading.Event)
    error: PaymentRequired | None = None
    future: asyncio.Future[None] | None = None

    def header(self) -> dict[str, str]:
        return {
            "X-Charge-Id": self.charge_id,
            "X-Charged": format_amount(self.amount),
            "X-Charge-Currency": self.tariff.currency,
        }


@dataclass(slots=True)
class CreditLine:
    """What this process believes a wallet holds, and what it has promised from it."""

    available: int
    reserved: int = 0


def anonymous_caller(tariff: Tariff) -> PaymentRequired:
    """Nobody to charge: a priced model answers signed-in callers with a wallet only."""
    return PaymentRequired(
        f"{tariff.model_name} is priced: sign in with a funded wallet to use it",
        {"model": tariff.model_name, "price": format_amount(tariff.amount), "currency": tariff.currency},
    )


class Tariffs:
    """Model name → its price, re-read every ``refresh_s`` (a price change applies within it)."""

    def __init__(self, db: Database, refresh_s: float) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self._by_model: dict[str, Tariff] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, model_name: str | None) -> Tariff | None:
        if time.monotonic() - self._loaded_at > self.refresh_s:
            self.refresh()
        return self._by_model.get(model_name or "")

    def invalidate(self) -> None:
        """Re-read at the next call (this process changed an offer or a price)."""
        self._loaded_at = float("-inf")

    def refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._loaded_at <= self.refresh_s:
                return
            with self.db.session() as session:
                rows = session.execute(
                    select(Offer, OfferPrice)
                    .join(OfferPrice, (OfferPrice.offer_id == Offer.id) & OfferPrice.effective_to.is_(None))
                    .where(Offer.active.is_(True), Offer.execution == "platform")
                    .order_by(OfferPrice.amount.desc(), Offer.created_at.desc())
                ).all()
            # Cheapest last, so it wins: a model offered twice is sold at its lowest price.
            self._by_model = {
                offer.model_name: Tariff(
                    offer.model_name,
                    offer.id,
                    price.id,
                    price.amount,
                    price.fee_bps,
                    offer.provider_id,
                    offer.currency,
                )
                for offer, price in rows
            }
            self._loaded_at = time.monotonic()


class PaidCalls:
    def __init__(self, db: Database, clock: Clock, journal: Journal, refresh_s: float = 1.0) -> None:
        self.db = db
        self.clock = clock
        self.journal = journal
        self.tariffs = Tariffs(db, refresh_s)
        self._credit: dict[tuple[int, str], CreditLine] = {}
        self._credit_lock = threading.Lock()
        self._account_ids: dict[tuple[str, str], int] = {}  # the writer's: accounts are never deleted
        self._queue: deque[Charge] = deque()
        self._answering = 0  # charges reserved whose answers are still being computed
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._write_loop, name="paid-calls-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=10)

    # -- the request path ------------------------------------------------------------------------

    def tariff(self, model_name: str | None) -> Tariff | None:
        return self.tariffs.get(model_name)

    def reserve(self, principal: Principal, model_name: str | None, rows: int = 1) -> Charge | None:
        """A charge for ``rows`` answers of ``model_name``, promised from the caller's credit line;
        ``None`` when the model is free for this caller (unpriced, or the caller owns it).
        Blocking only when the credit line is first read or runs short (one query)."""
        tariff = self.tariffs.get(model_name)
        if tariff is None or principal.user_id == tariff.provider_id:
            return None
        if principal.user_id is None:
            raise anonymous_caller(tariff)
        amount = tariff.amount * rows
        key = (principal.user_id, tariff.currency)
        with self._credit_lock:
            line = self._credit.get(key)
            if line is not None and line.available - line.reserved >= amount:
                line.reserved += amount
                return self._answering_one(Charge(str(uuid.uuid4()), principal.user_id, tariff, amount))
        available = self._read_available(principal.user_id, tariff.currency)
        with self._credit_lock:
            line = self._credit.setdefault(key, CreditLine(available))
            line.available = available
            if line.available - line.reserved < amount:
                raise InsufficientFunds(
                    f"the wallet cannot pay {format_amount(amount)} {tariff.currency} for {tariff.model_name}"
                    " (a priced model)",
                    {
                        "price": format_amount(amount),
                        "currency": tariff.currency,
                        "model": tariff.model_name,
                        "available": format_amount(max(0, line.available - line.reserved)),
                    },
                )
            line.reserved += amount
        return self._answering_one(Charge(str(uuid.uuid4()), principal.user_id, tariff, amount))

    def _answering_one(self, charge: Charge) -> Charge:
        with self._wake:
            self._answering += 1
        return charge

    def hold_job(self, session: Session, owner: Principal, job: PredictionJob, rows: int) -> None:
        """Inside the submit's transaction: hold the price of a paid rows job (402 refuses the
        submit, and nothing is stored); completing the job captures it, failing or cancelling it
        voids it (``marketplace.settlement``)."""
        tariff = self.tariffs.get(job.model_name)
        if tariff is None or owner.user_id == tariff.provider_id:
            return
        if owner.user_id is None:
            raise anonymous_caller(tariff)
        amount = tariff.amount * rows
        legs = split(amount, tariff.fee_bps)
        self.journal.lock(session)
        try:
            hold = self.journal.hold(
                session,
                f"hold:{job.id}",
                f"client:{owner.user_id}",
                "escrow",
                amount,
                tariff.currency,
                "hold",
                self.clock.now() + timedelta(days=1),
                request_id=job.id,
                actor_user_id=owner.user_id,
            )
        except InsufficientFunds as exc:
            raise InsufficientFunds(
                f"the wallet cannot pay {format_amount(amount)} {tariff.currency} for this job", exc.details
            ) from exc
        job.price, job.currency, job.hold_transfer_id = amount, tariff.currency, hold.id
        job.offer_id, job.price_id, job.execution = tariff.offer_id, tariff.price_id, "platform"
        job.parameters = {
            **(job.parameters or {}),
            "provider_id": tariff.provider_id,
            "breakdown": {"provider": legs.provider, "evaluator": 0, "platform_fee": legs.platform_fee},
        }
        session.flush()

    def release(self, charge: Charge | None) -> None:
        """The answer failed: nothing is charged and the promise is withdrawn."""
        if charge is None:
            return
        with self._wake:
            self._answering -= 1
            if self._answering == 0:
                self._wake.notify()
        self._unreserve(charge)

    def _unreserve(self, charge: Charge) -> None:
        with self._credit_lock:
            line = self._credit.get((charge.user_id, charge.tariff.currency))
            if line is not None:
                line.reserved = max(0, line.reserved - charge.amount)

    async def commit(self, charge: Charge | None) -> None:
        """Write the charge with the next group commit and wait until it is durable; 402 when the
        wallet no longer covers it (another process spent it first)."""
        if charge is None:
            return
        loop = asyncio.get_running_loop()
        charge.future = loop.create_future()
        self._enqueue(charge)
        await charge.future
        if charge.error is not None:
            raise charge.error

    def commit_blocking(self, charge: Charge | None) -> None:
        """:meth:`commit` for callers in a worker thread."""
        if charge is None:
            return
        self._enqueue(charge)
        charge.done.wait()
        if charge.error is not None:
            raise charge.error

    def _enqueue(self, charge: Charge) -> None:
        with self._wake:
            self._answering -= 1
            self._queue.append(charge)
            if len(self._queue) == 1 or self._answering == 0:
                self._wake.notify()

    def _read_available(self, user_id: int, currency: str) -> int:
        with self.db.session() as session:
            return self.journal.balance(session, f"client:{user_id}", currency).available

    # -- the writer ------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stop:
                    self._wake.wait()
                if self._stop and not self._queue:
                    return
                deadline = time.monotonic() + LINGER_S
                while self._answering > 0 and len(self._queue) < MAX_BATCH and not self._stop:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            try:
                self._write(batch)
            except Exception as exc:
                log.exception("could not write %d paid charges", len(batch))
                for charge in batch:
                    self._unreserve(charge)
                    charge.error = charge.error or PaymentRequired(
                        "the charge could not be written; nothing was charged", {"reason": type(exc).__name__}
                    )
            self._settled(batch)

    def _write(self, batch: list[Charge]) -> None:
        """One transaction for the whole batch: a handful of statements, whatever its size."""
        ids = dict(self._account_ids)
        with self.db.session() as session:
            self.journal.lock(session)
            wallets = {(f"client:{c.user_id}", c.tariff.currency) for c in batch}
            payees = {("platform:fees", c.tariff.currency) for c in batch} | {
                (f"provider:{c.tariff.provider_id}", c.tariff.currency) for c in batch
            }
            accounts = self.journal.account_ids(session, wallets | payees, ids)
            ids.update(accounts)
            available = self.journal.available_of(session, [accounts[key] for key in wallets])
            balances = {key: available.get(accounts[key], 0) for key in wallets}
            transfers: list[Single] = []
            fees: dict[tuple[str, str], tuple[str, int]] = {}  # per payee: (first charge id, Σ fee)
            for charge in batch:
                wallet = (f"client:{charge.user_id}", charge.tariff.currency)
                if balances[wallet] < charge.amount:
                    charge.error = InsufficientFunds(
                        "the wallet no longer covers this answer: nothing was charged",
                        {"price": format_amount(charge.amount), "available": format_amount(balances[wallet]),
                         "currency": wallet[1]},
                    )  # fmt: skip
                    continue
                balances[wallet] -= charge.amount
                provider = (f"provider:{charge.tariff.provider_id}", wallet[1])
                transfers.append(
                    Single(f"chg:{charge.charge_id}", wallet[0], provider[0], charge.amount, wallet[1],
                           "charge", request_id=charge.charge_id, actor_user_id=charge.user_id,
                           reason=charge.tariff.model_name)
                )  # fmt: skip
                fee = split(charge.amount, charge.tariff.fee_bps).platform_fee
                first, total = fees.get(provider, (charge.charge_id, 0))
                fees[provider] = (first, total + fee)
            # The platform's share, floor(price x bps / 10 000) of each answer exactly, taken from the
            # provider once per batch rather than as a second row per answer.
            for (payee, currency), (first, total) in sorted(fees.items()):
                if total > 0:
                    transfers.append(
                        Single(f"chgfee:{first}", payee, "platform:fees", total, currency, "fee",
                               reason="platform fee of paid predictions")
                    )  # fmt: skip
            self.journal.singles(session, transfers, ids)
        self._account_ids = ids  # committed: these accounts exist for good
        with self._credit_lock:
            for (code, currency), left in balances.items():
                user_id = int(code.partition(":")[2])
                line = self._credit.setdefault((user_id, currency), CreditLine(left))
                line.available = left
            for charge in batch:
                owed = self._credit.get((charge.user_id, charge.tariff.currency))
                if owed is not None:
                    owed.reserved = max(0, owed.reserved - charge.amount)

    @staticmethod
    def _settled(batch: list[Charge]) -> None:
        """Wake the waiting requests: one hand-off per event loop for the whole batch, not one each
        (every hand-off to a loop costs it a wake-up)."""
        waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for charge in batch:
            charge.done.set()
            if charge.future is not None:
                waiting.setdefault(charge.future.get_loop(), []).append(charge.future)
        for loop, futures in waiting.items():
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
