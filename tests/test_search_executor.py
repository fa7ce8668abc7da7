"""Validations through executors: same result as in-process; latency-like objectives never overlap."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from runtime.search import Objective, search
from tests.search_helpers import SMALL, problem, summary


class Overlap:
    """Counts how many calls run at once."""

    def __init__(self):
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def __call__(self, fn):
        def wrapped(configs):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(0.002)
                return fn(configs)
            finally:
                with self.lock:
                    self.now -= 1
        return wrapped


def _objectives(p, parallel: Overlap, serial: Overlap):
    acc, macs = p.objectives()
    return [Objective("accuracy", parallel(acc.evaluate), minimize=False),
            Objective("latency_ms", serial(lambda cs: [m / 1e8 for m in macs.evaluate(cs)]),
                      concurrent=False),
            macs]


def _search(p, executor, parallel, serial):
    return search(p.space, _objectives(p, parallel, serial), tactic="concurrent", budget=40,
                  population=12, seed=2, progress=False, options=SMALL, executor=executor,
                  chunk_size=2)


def test_thread_pool_equals_in_process_and_serial_objectives_never_overlap():
    p = problem()
    base = _search(p, None, Overlap(), Overlap())
    parallel, serial = Overlap(), Overlap()
    with ThreadPoolExecutor(4) as pool:
        pooled = _search(p, pool, parallel, serial)
    assert summary(pooled) == summary(base)
    assert parallel.most > 1  # the costly objective did run in parallel ...
    assert serial.most == 1  # ... the measurement never did


def test_dask_client():
    """Objectives travel to Dask workers pickled (cloudpickle): plain, lock-free objectives."""
    distributed = pytest.importorskip("distributed")
    p = problem()

    def run(executor):
        return search(p.space, p.objectives(), tactic="concurrent", budget=40, population=12,
                      seed=2, progress=False, options=SMALL, executor=executor, chunk_size=3)

    base = run(None)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        result = run(client)
    assert summary(result) == summary(base)
