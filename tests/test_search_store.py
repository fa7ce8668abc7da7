"""EvaluationStore: binding refuses other networks/targets, rows never lost, several writers."""
import multiprocessing as mp
import sqlite3

import pytest
import torch

from runtime.search import EvaluationStore, StoreMismatchError, fingerprint
from runtime.search.store import Row


def _rows(n, objective="acc", start=0):
    return [Row("net", objective, "{}", f'{{"w": {i}}}', float(i), 0.1) for i in range(start, start + n)]


def test_bind_refuses_other_network_target_and_objective_settings(tmp_path):
    path = tmp_path / "s.db"
    store = EvaluationStore(path)
    store.bind("net", target="openvino:int8:b1:t1:cpu", objectives={"acc": {"data": "a"}})
    store.bind("net", target="openvino:int8:b1:t1:cpu", objectives={"acc": {"data": "a"}})
    again = EvaluationStore(path)
    with pytest.raises(StoreMismatchError, match="super-network net, not other"):
        again.bind("other", target="openvino:int8:b1:t1:cpu", objectives={})
    with pytest.raises(StoreMismatchError, match="target 'openvino:int8:b1:t1:cpu', not "
                                                 "'onnxruntime:fp32:b1:t1:cpu'"):
        again.bind("net", target="onnxruntime:fp32:b1:t1:cpu", objectives={})
    with pytest.raises(StoreMismatchError, match="objective 'acc'"):
        again.bind("net", target="openvino:int8:b1:t1:cpu", objectives={"acc": {"data": "b"}})


def test_first_row_wins_and_reopening_keeps_everything(tmp_path):
    path = tmp_path / "s.db"
    store = EvaluationStore(path)
    store.put(_rows(3))
    store.put([Row("net", "acc", "{}", '{"w": 0}', 99.0, 0.1)])
    store.close()
    again = EvaluationStore(path)
    assert again.count() == 3
    assert again.get("net", "acc", "{}", ['{"w": 0}'])['{"w": 0}'].value == 0.0
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(path, start):
    store = EvaluationStore(path)
    for i in range(20):
        store.put(_rows(5, start=start + 5 * i))


def test_several_processes_write_one_store(tmp_path):
    path = str(tmp_path / "s.db")
    EvaluationStore(path)
    ctx = mp.get_context("fork")  # spawn would re-import torch (~20 s on 2 shared cores)
    procs = [ctx.Process(target=_writer, args=(path, k * 1000)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert EvaluationStore(path).count() == 200


def test_fingerprint_changes_with_weights_not_with_state():
    from runtime.elastic import Bindings, Dimension, OpBinding, SearchSpace, Segment, SuperNetwork, wrap
    import torch.fx as fx

    def net():
        torch.manual_seed(0)
        gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)))
        for name in ("0", "1"):
            gm._modules[name] = wrap(gm._modules[name])
        space = SearchSpace([Dimension("hidden", "width", (8, 4))])
        b = Bindings(ops=[OpBinding("0", out_map=[Segment("hidden", 8)]),
                          OpBinding("1", in_map=[Segment("hidden", 8)])],
                     out_spatial={"0": {None: 1}, "1": {None: 1}})
        return SuperNetwork(gm, space, b)

    a, b = net(), net()
    assert fingerprint(a) == fingerprint(b)
    b.activate({"hidden": 4})
    assert fingerprint(a) == fingerprint(b)
    with torch.no_grad():
        b.graph_module.get_submodule("0").module.weight[0, 0] += 1
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a.space).startswith("space-")
