"""SearchSpace, Dimension and SubnetConfig (runtime/elastic/space.py)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.elastic import Dimension, SearchSpace, SubnetConfig


def _space() -> SearchSpace:
    return SearchSpace([Dimension("w1", "width", (8, 6, 4)), Dimension("k", "kernel", (7, 5, 3)),
                        Dimension("d", "depth", (4, 3, 2, 1))])


def test_size_is_the_exact_product():
    assert _space().size == 36
    big = SearchSpace([Dimension(f"w{i}", "width", (3, 2, 1)) for i in range(60)])
    assert big.size == 3 ** 60 and isinstance(big.size, int)


def test_names_getitem_and_kinds():
    space = _space()
    assert space.names == ("w1", "k", "d")
    assert space["k"].choices == (7, 5, 3) and space["k"].max == 7 and space["k"].min == 3
    assert [d.name for d in space.of_kind("depth")] == ["d"]
    with pytest.raises(KeyError, match="unknown dimension 'x'"):
        space["x"]


def test_max_and_min_configs():
    space = _space()
    assert dict(space.max_config()) == {"w1": 8, "k": 7, "d": 4}
    assert dict(space.min_config()) == {"w1": 4, "k": 3, "d": 1}
    assert space.encode(space.max_config()) == [0, 0, 0]
    assert space.encode(space.min_config()) == [2, 2, 3]


@settings(max_examples=50, deadline=None)
@given(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 3)))
def test_encode_decode_round_trip(vector):
    space = _space()
    config = space.decode(list(vector))
    assert space.encode(config) == list(vector)
    assert space.decode(space.encode(dict(config))) == config


def test_decode_accepts_integral_floats_and_rejects_others():
    space = _space()
    assert space.decode(np.array([1.0, 0.0, 3.0]))["d"] == 1
    with pytest.raises(ValueError, match=r"'k'.*\[0, 2\]"):
        space.decode([0, 3, 0])
    with pytest.raises(ValueError, match="integer"):
        space.decode([0.5, 0, 0])
    with pytest.raises(ValueError, match="3 dimensions"):
        space.decode([0, 0])


def test_validate_names_bad_missing_and_unknown_dimensions():
    space = _space()
    with pytest.raises(ValueError, match=r"dimension 'w1' \(width, choices \(8, 6, 4\)\) got 5"):
        space.validate({"w1": 5, "k": 7, "d": 4})
    with pytest.raises(ValueError, match=r"missing dimension 'd' \(depth, choices \(4, 3, 2, 1\)\)"):
        space.validate({"w1": 8, "k": 7})
    with pytest.raises(ValueError, match="unknown dimension 'zz'"):
        space.validate({"w1": 8, "k": 7, "d": 4, "zz": 1})


def test_validate_returns_a_marked_config():
    space = _space()
    config = space.validate({"w1": 6, "k": 5, "d": np.int64(2)})
    assert isinstance(config, SubnetConfig) and config["d"] == 2 and type(config["d"]) is int
    assert space.is_validated(config) and space.validate(config) is config
    assert not _space().is_validated(config)  # another space re-validates


def test_sample_is_seeded_and_within_choices():
    space = _space()
    assert space.sample(3) == space.sample(3)
    rng = np.random.default_rng(0)
    samples = [space.sample(rng) for _ in range(50)]
    assert len(set(samples)) > 10
    assert all(c[d.name] in d.choices for c in samples for d in space)


def test_subnet_config_is_immutable_hashable_and_picklable():
    config = SubnetConfig({"a": 1}, b=2)
    assert config == {"a": 1, "b": 2} and hash(config) == hash(SubnetConfig({"b": 2, "a": 1}))
    with pytest.raises(TypeError):
        config["a"] = 3
    with pytest.raises(AttributeError, match="immutable"):
        config.x = 1
    updated = config.with_(a=5)
    assert updated["a"] == 5 and config["a"] == 1
    assert config.with_({"dotted.name": 1})["dotted.name"] == 1
    assert pickle.loads(pickle.dumps(config)) == config
    assert {config: 1}[SubnetConfig(a=1, b=2)] == 1


def test_to_dict_from_dict_round_trip_through_json():
    space = _space()
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space and again.size == 36


@pytest.mark.parametrize("kind,choices,match", [
    ("width", (4, 8), "descending"), ("width", (), "non-empty"), ("kernel", (5, 4), "odd"),
    ("width", (2, 0), ">= 1"), ("depth", (2, -1), ">= 0"), ("height", (2, 1), "kind"),
])
def test_dimension_rejects_bad_choices(kind, choices, match):
    with pytest.raises(ValueError, match=match):
        Dimension("x", kind, choices)


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        SearchSpace([Dimension("a", "width", (2, 1)), Dimension("a", "depth", (1, 0))])


def test_depth_may_skip_every_block():
    assert Dimension("d", "depth", (2, 1, 0)).min == 0
