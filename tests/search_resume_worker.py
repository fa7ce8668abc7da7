"""``python -m tests.search_resume_worker STORE LOG [DELAY_S]``: the seeded search the resume test kills."""
import sys
import time

from runtime.search import Objective, search
from tests.search_helpers import SMALL, problem


def run(store, log=None, delay_s=0.0):
    p = problem()
    acc, macs = p.objectives()

    def fn(configs):
        out = acc.evaluate(configs)
        time.sleep(delay_s * len(configs))
        if log:
            with open(log, "a") as f:
                f.writelines(f"{sorted(c.items())}\n" for c in configs)
        return out

    slow = Objective("accuracy", fn, minimize=False, settings=acc.settings)
    return search(p.space, [slow, macs], tactic="concurrent", budget=60, population=12, seed=3,
                  store=store, progress=False, options=SMALL, chunk_size=1)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
