"""``supernet train`` as registered in compiler.cli."""
import json

import pytest
import torch

from compiler.cli import main
from runtime.elastic import SuperNetwork
from tests.train_helpers import supernet


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "net.pt"
    supernet().save(path)
    return path


def test_train_writes_checkpoints_metrics_and_the_trained_supernet(saved, tmp_path, capsys):
    argv = ["train", str(saved), "--data", "digits", "--batch-size", "256", "--strategy", "deps",
            "--options", '{"n": 3, "p_warmup": 0.3}', "--epochs", "2", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    out = tmp_path / "net.pt.train"
    assert summary["steps"] == 10 and summary["supernet"] == str(out / "supernet.pt")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (out / "checkpoints").glob("ckpt-*.pt")) == [
        "ckpt-000000005.pt", "ckpt-000000010.pt"]
    trained = SuperNetwork.load(out / "supernet.pt")
    original = SuperNetwork.load(saved)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                     original.state_dict().values()))
    assert main(argv + ["--resume"]) == 0  # nothing left to do: resumes at the end
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed_from"].endswith(
        "ckpt-000000010.pt")


@pytest.mark.parametrize("extra,message", [
    (["--strategy", "sandwhich"], "unknown strategy 'sandwhich'"),
    (["--options", '{"n": 1}'], "n (sub-networks per step) must be an integer >= 2"),
    (["--options", "[1]"], "--options must be a JSON object"),
])
def test_bad_input_is_one_error_line(saved, capsys, extra, message):
    assert main(["train", str(saved), "--data", "digits", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("supernet: error:") and message in err


def test_bad_data_reference(saved, capsys):
    assert main(["train", str(saved), "--data", "nosuch.module:f", "--no-progress"]) == 2
    assert "data reference 'nosuch.module:f'" in capsys.readouterr().err
