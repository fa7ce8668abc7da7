"""``supernet search`` on a saved super-network: front JSON, plots, clear errors."""
import json

from compiler.cli import main
from tests.search_helpers import tiny_supernet


def test_search_command_writes_front_and_plots(tmp_path, capsys):
    path = tmp_path / "net.pt"
    tiny_supernet().save(path)
    out, store = tmp_path / "out", tmp_path / "store.db"
    argv = ["search", str(path), "--objectives", "tests.search_helpers:width_score,macs",
            "--tactic", "full", "--budget", "6", "--population", "6", "--store", str(store),
            "--no-progress", "-o", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "front.json").read_text())
    assert [o["name"] for o in data["objectives"]] == ["score", "macs"]
    assert data["validations"] == 6 and data["pareto"] and data["hypervolume"]
    assert (out / "front_macs.png").stat().st_size > 1000 and (out / "hypervolume.png").exists()
    assert "6 validations" in capsys.readouterr().out
    assert main(argv) == 0  # same store, same search: everything is read back
    again = json.loads((out / "front.json").read_text())
    strip = lambda entries: [(e["config"], e["values"]) for e in entries]  # noqa: E731
    assert strip(again["pareto"]) == strip(data["pareto"])
    assert all(e["cached"] for e in again["history"])


def test_search_command_errors(tmp_path, capsys):
    path = tmp_path / "net.pt"
    tiny_supernet().save(path)
    assert main(["search", str(path), "--objectives", "speed", "-o", str(tmp_path)]) == 2
    assert "unknown objective 'speed'" in capsys.readouterr().err
    assert main(["search", str(path), "--objectives", "accuracy", "-o", str(tmp_path)]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["search", str(path), "--objectives", "macs,params", "--tactic", "fast",
                 "-o", str(tmp_path)]) == 2
    assert "valid: " in capsys.readouterr().err
    other = tmp_path / "other.pt"
    net = tiny_supernet()
    net.graph_module.get_submodule("0").module.weight.data += 1
    net.save(other)
    store = str(tmp_path / "s.db")
    ok = ["--objectives", "macs,params", "--budget", "4", "--no-progress", "--store", store,
          "-o", str(tmp_path)]
    assert main(["search", str(path), *ok]) == 0
    assert main(["search", str(other), *ok]) == 2
    assert "holds evaluations of super-network" in capsys.readouterr().err


def test_search_command_can_turn_descriptors_off(tmp_path, monkeypatch):
    import importlib

    search_module = importlib.import_module("runtime.search.search")  # the module, not the function

    seen = []
    real = search_module.search

    def spy(*args, **kwargs):
        seen.append(kwargs["descriptors"])
        return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "search", spy)
    path = tmp_path / "net.pt"
    tiny_supernet().save(path)
    base = ["search", str(path), "--objectives", "macs,params", "--tactic", "full", "--budget", "3",
            "--no-progress"]
    assert main(base + ["-o", str(tmp_path / "a")]) == 0
    assert main(base + ["--no-descriptors", "-o", str(tmp_path / "b")]) == 0
    assert seen == [None, []]  # the defaults (blocks, MACs, params), then none
