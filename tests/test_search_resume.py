"""A search killed with SIGKILL and restarted on its store ends as an uninterrupted run would,
and validates nothing twice (Invariant 6 for search)."""
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime.search import EvaluationStore
from tests.search_helpers import summary
from tests.search_resume_worker import run

ROOT = Path(__file__).resolve().parents[1]


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    store, log = tmp_path / "killed.db", tmp_path / "calls.log"
    proc = subprocess.Popen([sys.executable, "-m", "tests.search_resume_worker", str(store),
                             str(log), "0.05"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if store.exists() and EvaluationStore(store).count(objective="accuracy") >= 25:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the worker finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = EvaluationStore(store).count(objective="accuracy")
    assert 25 <= before < 60

    resumed = run(store, log)
    reference = run(tmp_path / "clean.db")
    assert summary(resumed) == summary(reference)
    assert resumed.validations == 60 and resumed.info["cached"] >= before
    calls = collections.Counter(log.read_text().splitlines())
    twice = [c for c, n in calls.items() if n > 1]
    assert len(twice) <= 1  # at most the one config in flight when the kill came
    assert sum(calls.values()) <= 60 + 1
    assert EvaluationStore(store).count(objective="accuracy") == 60
