"""The ledger check: every promise the journal makes, recomputed from the journal alone.

``check_ledger`` streams the transfers in ``seq`` order (``yield_per``, so a journal of millions of
rows is read in constant memory, save the holds still open) and checks:

* ``seq_gapless``: the sequence numbers are exactly 1..N, and the head row's ``seq`` is N;
* ``hash_chain``: every row's ``prev_hash`` is the hash before it (from the genesis ``"0" * 64``),
  its ``hash`` recomputes from its fields, and the head row holds the last one;
* ``recompute``: each account's four running sums equal the sums rebuilt from the transfers
  (single: posted on both sides; pending: pending on both sides; post: the held amount moves from
  pending to posted; void and expire: the pending amount is released), and every post, void or
  expiry resolves a hold that exists, is still open, and moves the same amount between the same
  accounts in the same currency;
* ``conservation``: per currency, Σ debits = Σ credits, separately for pending and posted;
* ``bounds``: no account flagged ``debits_must_not_exceed_credits`` (or the mirror) is over it;
* ``clearing``: per currency, the escrow account's pending credits equal Σ price of the live
  marketplace requests (not terminal) whose hold is still open, no terminal request still has an
  open hold, and escrow's posted balance is 0 (captured money leaves escrow in the same transaction).

``trial_balance`` is the per-currency view an accountant reads: the four totals and the posted and
pending differences, which are ``"0.000000"`` on a healthy ledger.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from prediction_provider.db.ledger_models import LedgerAccount, LedgerHead, LedgerTransfer
from prediction_provider.db.models import PredictionJob
from prediction_provider.jobs.records import TERMINAL
from prediction_provider.ledger.journal import FIELDS, GENESIS_HASH, row_hash
from prediction_provider.ledger.money import format_amount

CHECKS = ("conservation", "recompute", "bounds", "clearing", "hash_chain", "seq_gapless")
MARKET_KINDS = ("market", "evaluation")
ESCROW = "escrow"
BATCH = 2000
# A check reports at most this many violations of one kind; the count says how many there were.
MAX_LISTED = 100
SUMS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")


@dataclass(slots=True)
class LedgerReport:
    ok: bool
    checks: dict[str, bool]
    violations: list[dict[str, Any]] = field(default_factory=list)
    transfers: int = 0
    accounts: int = 0
    head_seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "checks": dict(self.checks), "violations": list(self.violations),
            "transfers": self.transfers, "accounts": self.accounts, "head_seq": self.head_seq,
        }  # fmt: skip


class _Findings:
    def __init__(self) -> None:
        self.failed: set[str] = set()
        self.listed: dict[str, int] = defaultdict(int)
        self.violations: list[dict[str, Any]] = []

    def add(self, check: str, message: str, **details: Any) -> None:
        self.failed.add(check)
        self.listed[check] += 1
        if self.listed[check] <= MAX_LISTED:
            self.violations.append({"check": check, "message": message, "details": details})

    def report(self, transfers: int, accounts: int, head_seq: int) -> LedgerReport:
        for check, count in self.listed.items():
            if count > MAX_LISTED:
                self.violations.append(
                    {"check": check, "message": f"{count - MAX_LISTED} more violations not listed",
                     "details": {"count": count}}
                )  # fmt: skip
        checks = {name: name not in self.failed for name in CHECKS}
        return LedgerReport(all(checks.values()), checks, self.violations, transfers, accounts, head_seq)


@dataclass(slots=True)
class _Hold:
    amount: int
    debit: int
    credit: int
    currency: str
    request_id: str | None


def consistent_snapshot(session: Session) -> None:
    """Make every read of ``session``'s transaction see one state of the ledger, so a check that
    runs beside live traffic never reports a transfer committed between two of its reads.
    PostgreSQL: a REPEATABLE READ snapshot (writers go on). SQLite: its write lock (the journal
    lock), the only way its driver holds one snapshot across statements. Call it first."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        session.execute(update(LedgerHead).where(LedgerHead.id == 1).values(seq=LedgerHead.seq))


def check_ledger(session: Session, batch: int = BATCH) -> LedgerReport:
    """Recompute every balance and invariant from the journal (see the module doc), reading
    ``batch`` transfers at a time."""
    found = _Findings()
    accounts = {account.id: account for account in session.scalars(select(LedgerAccount))}
    sums: dict[int, list[int]] = {account_id: [0, 0, 0, 0] for account_id in accounts}
    open_holds: dict[str, _Hold] = {}
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
    columns = [getattr(LedgerTransfer, name) for name in (*FIELDS, "prev_hash", "hash")]
    rows = session.execute(select(*columns).order_by(LedgerTransfer.seq).execution_options(yield_per=batch))
    for values in rows:
        row = dict(zip((*FIELDS, "prev_hash", "hash"), values, strict=True))
        count += 1
        if row["seq"] != expected_seq:
            found.add("seq_gapless", f"seq {row['seq']} where {expected_seq} was next",
                      transfer_id=row["id"], seq=row["seq"], expected=expected_seq)  # fmt: skip
        expected_seq = row["seq"] + 1
        if row["prev_hash"] != prev_hash:
            found.add("hash_chain", f"{row['id']} does not chain to the row before it",
                      transfer_id=row["id"], seq=row["seq"])  # fmt: skip
        if row_hash(row["prev_hash"], row) != row["hash"]:
            found.add("hash_chain", f"{row['id']} was changed after it was written (its hash differs)",
                      transfer_id=row["id"], seq=row["seq"])  # fmt: skip
        prev_hash = row["hash"]
        _apply(row, accounts, sums, open_holds, found)
    head = session.get(LedgerHead, 1)
    head_seq = head.seq if head is not None else 0
    if head is None:
        found.add("hash_chain", "the ledger head row is missing")
    else:
        if head.seq != expected_seq - 1:
            found.add("seq_gapless", f"the head says seq {head.seq}, the journal ends at {expected_seq - 1}",
                      head_seq=head.seq, last_seq=expected_seq - 1)  # fmt: skip
        if head.hash != prev_hash:
            found.add("hash_chain", "the head's hash is not the last row's", head_seq=head.seq)
    _compare_sums(accounts, sums, found)
    _conservation(accounts, found)
    _bounds(accounts, found)
    _clearing(session, accounts, open_holds, found, batch)
    return found.report(count, len(accounts), head_seq)


def _apply(
    row: dict[str, Any], accounts: dict[int, LedgerAccount], sums: dict[int, list[int]],
    open_holds: dict[str, _Hold], found: _Findings,
) -> None:  # fmt: skip
    tid, amount, phase = row["id"], row["amount"], row["phase"]
    debit_id, credit_id = row["debit_account_id"], row["credit_account_id"]
    for account_id in (debit_id, credit_id):
        account = accounts.get(account_id)
        if account is None:
            found.add("recompute", f"{tid} names account {account_id}, which does not exist",
                      transfer_id=tid, account_id=account_id)  # fmt: skip
            return
        if account.currency != row["currency"]:
            found.add("recompute", f"{tid} is in {row['currency']}, {account.code} in {account.currency}",
                      transfer_id=tid, account=account.code)  # fmt: skip
    if amount <= 0 or debit_id == credit_id:
        found.add("recompute", f"{tid} moves a non-positive amount or between one account",
                  transfer_id=tid)  # fmt: skip
    debit, credit = sums[debit_id], sums[credit_id]
    if phase == "single":
        debit[1] += amount
        credit[3] += amount
        return
    if phase == "pending":
        debit[0] += amount
        credit[2] += amount
        open_holds[tid] = _Hold(amount, debit_id, credit_id, row["currency"], row["request_id"])
        return
    if phase not in ("post", "void", "expire"):
        found.add("recompute", f"{tid} has an unknown phase {phase!r}", transfer_id=tid, phase=phase)
        return
    hold = open_holds.pop(row["pending_id"] or "", None)
    if hold is None:
        found.add("recompute", f"{tid} resolves {row['pending_id']!r}, which is not an open hold",
                  transfer_id=tid, pending_id=row["pending_id"])  # fmt: skip
    elif (hold.amount, hold.debit, hold.credit, hold.currency) != (
        amount,
        debit_id,
        credit_id,
        row["currency"],
    ):
        found.add("recompute", f"{tid} does not match the hold {row['pending_id']} it resolves",
                  transfer_id=tid, pending_id=row["pending_id"])  # fmt: skip
    debit[0] -= amount
    credit[2] -= amount
    if phase == "post":
        debit[1] += amount
        credit[3] += amount


def _compare_sums(accounts: dict[int, LedgerAccount], sums: dict[int, list[int]], found: _Findings) -> None:
    for account_id, account in accounts.items():
        stored = [getattr(account, name) for name in SUMS]
        if stored != sums[account_id]:
            differing = {
                name: {"stored": format_amount(have), "journal": format_amount(want)}
                for name, have, want in zip(SUMS, stored, sums[account_id], strict=True)
                if have != want
            }
            found.add("recompute", f"{account.code} ({account.currency}) disagrees with the journal",
                      account=account.code, currency=account.currency, sums=differing)  # fmt: skip


def _conservation(accounts: dict[int, LedgerAccount], found: _Findings) -> None:
    for currency, totals in _totals(accounts.values()).items():
        for part in ("pending", "posted"):
            debits, credits = totals[f"debits_{part}"], totals[f"credits_{part}"]
            if debits != credits:
                found.add("conservation", f"{currency} {part}: debits {format_amount(debits)} "
                          f"≠ credits {format_amount(credits)}", currency=currency, part=part,
                          difference=format_amount(debits - credits))  # fmt: skip


def _bounds(accounts: dict[int, LedgerAccount], found: _Findings) -> None:
    for account in accounts.values():
        debits = account.debits_pending + account.debits_posted
        credits = account.credits_pending + account.credits_posted
        negative = [name for name in SUMS if getattr(account, name) < 0]
        if negative:
            found.add("bounds", f"{account.code} has negative sums", account=account.code, sums=negative)
        if account.flag_dmnec and debits > account.credits_posted:
            found.add("bounds", f"{account.code} ({account.currency}) is overdrawn by "
                      f"{format_amount(debits - account.credits_posted)}",
                      account=account.code, currency=account.currency)  # fmt: skip
        if account.flag_cmned and credits > account.debits_posted:
            found.add("bounds", f"{account.code} ({account.currency}) is over-credited by "
                      f"{format_amount(credits - account.debits_posted)}",
                      account=account.code, currency=account.currency)  # fmt: skip


def _clearing(
    session: Session, accounts: dict[int, LedgerAccount], open_holds: dict[str, _Hold], found: _Findings,
    batch: int,
) -> None:  # fmt: skip
    jobs = session.execute(
        select(PredictionJob.id, PredictionJob.status, PredictionJob.price, PredictionJob.currency,
               PredictionJob.hold_transfer_id)
        .where(PredictionJob.kind.in_(MARKET_KINDS), PredictionJob.hold_transfer_id.is_not(None))
        .execution_options(yield_per=batch)
    )  # fmt: skip
    live: dict[str, int] = defaultdict(int)
    for job_id, status, price, currency, hold_id in jobs:
        hold = open_holds.get(hold_id or "")
        if hold is None:
            continue
        if status in TERMINAL:
            found.add("clearing", f"request {job_id} is {status} but its hold {hold_id} is still open",
                      request_id=job_id, status=status, hold=hold_id)  # fmt: skip
            continue
        if hold.amount != (price or 0):
            found.add("clearing", f"request {job_id} holds {format_amount(hold.amount)}, "
                      f"its price is {format_amount(price or 0)}", request_id=job_id)  # fmt: skip
        live[currency or hold.currency] += price or 0
    escrows = {account.currency: account for account in accounts.values() if account.code == ESCROW}
    for currency in sorted(set(escrows) | set(live)):
        escrow = escrows.get(currency)
        pending = escrow.credits_pending - escrow.debits_pending if escrow is not None else 0
        if pending != live[currency]:
            found.add("clearing", f"escrow holds {format_amount(pending)} {currency}, the live requests "
                      f"{format_amount(live[currency])}", currency=currency,
                      escrow=format_amount(pending), live_requests=format_amount(live[currency]))  # fmt: skip
        posted = escrow.credits_posted - escrow.debits_posted if escrow is not None else 0
        if posted != 0:
            found.add("clearing", f"escrow's posted balance is {format_amount(posted)} {currency}, not 0",
                      currency=currency, posted=format_amount(posted))  # fmt: skip


def _totals(accounts: Any) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    for account in accounts:
        for name in SUMS:
            totals[account.currency][name] += getattr(account, name)
    return totals


def trial_balance(session: Session) -> list[dict[str, Any]]:
    """Per currency: the four totals over every account, and the posted and pending differences
    (debits - credits), all decimal strings; both differences are ``"0.000000"`` when it balances."""
    statement = select(
        LedgerAccount.currency, func.count(),
        *(func.coalesce(func.sum(getattr(LedgerAccount, name)), 0) for name in SUMS),
    ).group_by(LedgerAccount.currency).order_by(LedgerAccount.currency)  # fmt: skip
    balances = []
    for currency, accounts, debits_pending, debits_posted, credits_pending, credits_posted in session.execute(
        statement
    ):
        dp, dpo, cp, cpo = (int(x) for x in (debits_pending, debits_posted, credits_pending, credits_posted))
        balances.append(
            {
                "currency": currency, "accounts": int(accounts),
                "debits_pending": format_amount(dp), "debits_posted": format_amount(dpo),
                "credits_pending": format_amount(cp), "credits_posted": format_amount(cpo),
                "pending_difference": format_amount(dp - cp), "posted_difference": format_amount(dpo - cpo),
                "balanced": dp == cp and dpo == cpo,
            }
        )  # fmt: skip
    return balances
