"""Pinning worker processes to CPUs: claiming a free CPU, pinning every thread, releasing some."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prediction_provider.serving.affinity import claim_cpu


def test_each_claim_gets_a_cpu_no_other_claim_holds(tmp_path: Path) -> None:
    first = claim_cpu(tmp_path, [3, 5])
    second = claim_cpu(tmp_path, [3, 5])
    assert first is not None
    assert second is not None
    assert (first.cpu, second.cpu) == (3, 5)
    assert claim_cpu(tmp_path, [3, 5]) is None  # more workers than CPUs: the last stays unpinned
    first.release()
    replacement = claim_cpu(tmp_path, [3, 5])
    assert replacement is not None
    assert replacement.cpu == 3  # a dead worker's CPU goes to the next one
    second.release()
    replacement.release()


def test_a_claim_is_held_against_other_processes(tmp_path: Path) -> None:
    held = claim_cpu(tmp_path, [0])
    assert held is not None
    script = (
        "import sys; from pathlib import Path; from prediction_provider.serving.affinity import claim_cpu; "
        "print(claim_cpu(Path(sys.argv[1]), [0, 1]).cpu)"
    )
    command = [sys.executable, "-c", script, str(tmp_path)]
    other = subprocess.run(command, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "1"
    held.release()


PIN_SCRIPT = """
import json, os, threading
from concurrent.futures import ThreadPoolExecutor
from prediction_provider.serving.affinity import pin_process, release_current_thread

def affinity_of_a_new_thread(initializer=None):
    with ThreadPoolExecutor(1, initializer=initializer) as pool:
        return sorted(pool.submit(os.sched_getaffinity, 0).result())

started = threading.Event(); stop = threading.Event(); seen = {}
def earlier():
    started.set(); stop.wait(); seen["earlier"] = sorted(os.sched_getaffinity(0))
thread = threading.Thread(target=earlier); thread.start(); started.wait()
before = sorted(os.sched_getaffinity(0))
pin_process(before[-1])
seen["main"] = sorted(os.sched_getaffinity(0))
seen["later"] = affinity_of_a_new_thread()
seen["released"] = affinity_of_a_new_thread(release_current_thread)
stop.set(); thread.join()
print(json.dumps({"before": before, **seen}))
"""


def test_pinning_moves_every_thread_and_releasing_lets_one_out() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("pinning to one of several CPUs needs several")
    # In a child process: pinning is process-wide and would hold the test run to one CPU.
    out = subprocess.run([sys.executable, "-c", PIN_SCRIPT], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    cpu = seen["before"][-1]
    assert seen["main"] == [cpu]
    assert seen["earlier"] == [cpu]  # a thread started before the pin is moved too
    assert seen["later"] == [cpu]  # threads started afterwards inherit it
    assert seen["released"] == seen["before"]
