"""The embedded job executor: a bounded pool of threads in the API process that claims pending rows.

There is no queue to lose: the table is the queue. A submit wakes the pool at
once; idle threads also look every ``job_poll_seconds`` so jobs from another
process, or left behind by a crash, are found. At start-up, jobs this host's
dead processes left ``processing`` are put back at once; jobs of a live
process elsewhere are taken over only when their lease runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence

from prediction_provider.jobs.execution import JobRunner, Outcome
from prediction_provider.jobs.store import JobStore

log = logging.getLogger(__name__)


def process_worker_name(kind: str) -> str:
    return f"{kind}@{socket.gethostname()}:{os.getpid()}"


def pid_alive(worker: str) -> bool:
    """Whether the process named in an in-process worker name (``inprocess@host:pid``) still runs."""
    try:
        pid = int(worker.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class InProcessExecutor:
    def __init__(self, store: JobStore, runner: JobRunner, threads: int, poll_seconds: float) -> None:
        self.store = store
        self.runner = runner
        self.threads = threads
        self.poll_seconds = poll_seconds
        self._wake = threading.Condition()
        self._pending_wakeups = 0
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self.active: set[str] = set()  # job ids running now (set operations are atomic)

    @property
    def worker_name(self) -> str:
        return self.runner.worker

    def start(self) -> None:
        prefix = self.worker_name.rsplit(":", 1)[0] + ":"
        recovered = self.store.recover_orphans(prefix, pid_alive)
        if recovered:
            log.info("recovered %d job(s) left processing by a stopped process", len(recovered))
        self._finish_stalled()
        for index in range(self.threads):
            thread = threading.Thread(target=self._work, name=f"job-executor-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Let running jobs finish (their rows stay authoritative if they do not), take no more."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._workers:
            thread.join(timeout)
        self._workers.clear()

    def dispatch(self, job_ids: Sequence[str]) -> None:
        with self._wake:
            self._pending_wakeups += len(job_ids)
            self._wake.notify(len(job_ids))

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                ran = self._run_available()
            except Exception:
                log.exception("job executor could not poll for work")
                ran = False
            if ran:
                continue
            self._finish_stalled()
            with self._wake:
                if self._pending_wakeups == 0 and not self._stopping.is_set():
                    self._wake.wait(self.poll_seconds)
                self._pending_wakeups = max(0, self._pending_wakeups - 1)

    def _finish_stalled(self) -> None:
        try:
            if finished := self.runner.finish_stalled():
                log.info("finished %d batch job(s) whose last chunk had completed", finished)
        except Exception:
            log.exception("could not finish stalled batch jobs")

    def _run_available(self) -> bool:
        """Claim and run jobs until none is claimable; ``True`` if anything ran."""
        ran = False
        while not self._stopping.is_set():
            claimed = self.store.claim_next(self.worker_name)
            if claimed is None:
                return ran
            self.active.add(claimed.job.id)
            try:
                report = self.runner.run_claimed(claimed)
            finally:
                self.active.discard(claimed.job.id)
            if report.outcome is Outcome.SPLIT:
                self.dispatch(report.spawned)
            ran = True
        return ran
