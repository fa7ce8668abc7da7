"""The per-layer latency lookup table: keys, reuse across networks, estimates, agreement."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from runtime.lower import LatencyTable, build_latency_table, lut_agreement
from runtime.lower.lut import layer_calls

X = torch.randn(1, 3, 16, 16)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERNET_CACHE_DIR", str(tmp_path / "cache"))
FAST = dict(warmup=1, iterations=3)


class Block(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return x + self.act(self.conv(x))


def net(width: int, depth: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), *[Block(width) for _ in range(depth)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4)).eval()


def test_layer_calls_key_on_configuration_and_input_shape():
    calls = layer_calls(net(8, 2), X)
    keys = [k for k, _, _ in calls]
    assert len(calls) == 1 + 2 * 2 + 3  # stem, two (conv, relu) blocks, pool, flatten, linear
    assert keys[1] == keys[3] and keys[2] == keys[4]  # repeated blocks share one configuration
    assert "Conv2d(8, 8, kernel_size=(3, 3)" in keys[1] and "(1, 8, 16, 16)" in keys[1]


def test_table_times_each_configuration_once_and_sums():
    table = build_latency_table([net(8, 3)], X, **FAST)
    assert len(table.entries) == 6  # stem, block conv, relu, pool, flatten, linear
    assert table.overhead_ms > 0 and all(v >= 0 for v in table.entries.values())
    expected = table.overhead_ms + sum(table.entries[k] for k, _, _ in layer_calls(net(8, 3), X))
    assert table.estimate(net(8, 3), X, extend=False) == pytest.approx(expected)
    assert table.estimate(net(8, 1), X, extend=False) < table.estimate(net(8, 3), X, extend=False)
    assert table.add(net(8, 5), X) == 0  # deeper, same configurations: nothing new to time


def test_missing_configurations_raise_or_extend():
    table = build_latency_table([net(8, 1)], X, **FAST)
    with pytest.raises(KeyError, match="not in the table"):
        table.estimate(net(16, 1), X, extend=False)
    assert table.estimate(net(16, 1), X) > 0 and len(table.entries) > 6


def test_table_round_trips_through_json(tmp_path):
    table = build_latency_table([net(8, 1)], X, **FAST)
    table.save(tmp_path / "lut.json")
    assert LatencyTable.load(tmp_path / "lut.json") == table


def test_openvino_table():
    table = build_latency_table([net(8, 1)], X, backend="openvino", **FAST)
    assert table.backend == "openvino" and table.estimate(net(8, 1), X, extend=False) > 0


def test_agreement_reports_kendall_tau():
    nets = [net(w, d) for w, d in ((8, 1), (8, 4), (16, 2), (32, 4))]
    table = build_latency_table(nets, X, **FAST)
    # A measurement that is an exact monotone function of the estimate ranks identically.
    same = lut_agreement(table, nets, X, measure=lambda m: 2 * table.estimate(m, X) + 1)
    assert same.kendall_tau == pytest.approx(1.0)
    full = lut_agreement(table, nets, X)
    assert -1.0 <= full.kendall_tau <= 1.0 and len(full.measured_ms) == 4
    assert all(math.isfinite(v) and v > 0 for v in full.measured_ms)
    with pytest.raises(ValueError, match="two networks"):
        lut_agreement(table, nets[:1], X)
