"""Channel maps: select / active_size / Selector / take (runtime/elastic/channels.py)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.elastic.channels import (Segment, Selector, active_size, full_size, map_from_list,
                                      map_to_list, select, take)


def test_all_full_selects_none():
    cmap = (Segment("a", 4), Segment(None, 3), Segment("b", 2))
    assert select(cmap, {"a": 4, "b": 2}) is None


def test_only_last_segment_narrowed_is_a_prefix():
    cmap = (Segment("a", 4), Segment(None, 3), Segment("b", 2))
    assert select(cmap, {"a": 4, "b": 1}) == 8


def test_prefix_counts_inner_repeats():
    cmap = (Segment("c", 8, inner=4),)
    assert select(cmap, {"c": 3}) == 12
    assert active_size(cmap, {"c": 3}) == 12


def test_narrowed_middle_segment_gives_index():
    cmap = (Segment("a", 4), Segment(None, 2), Segment("b", 3))
    idx = select(cmap, {"a": 2, "b": 3})
    assert idx.dtype == torch.long
    assert idx.tolist() == [0, 1, 4, 5, 6, 7, 8]


def test_index_with_inner_repeats():
    cmap = (Segment("a", 2, inner=3), Segment("b", 2, inner=3))
    assert select(cmap, {"a": 1, "b": 1}).tolist() == [0, 1, 2, 6, 7, 8]


def test_frozen_segment_is_always_full():
    cmap = (Segment(None, 5),)
    assert select(cmap, {}) is None
    assert active_size(cmap, {}) == 5 == full_size(cmap)


def test_missing_width_names_the_group():
    with pytest.raises(ValueError, match="'b'"):
        select((Segment("a", 2), Segment("b", 2)), {"a": 1})


@pytest.mark.parametrize("width", [0, 5])
def test_width_out_of_range_raises(width):
    with pytest.raises(ValueError, match=r"outside \[1, 4\]"):
        select((Segment("a", 4),), {"a": width})


def test_segment_rejects_empty_sizes():
    with pytest.raises(ValueError, match="size and inner"):
        Segment("a", 0)


def test_selector_caches_the_same_index_object():
    sel = Selector((Segment("a", 4), Segment("b", 4)))
    first = sel.select({"a": 2, "b": 3, "other": 1})
    assert sel.select({"a": 2, "b": 3, "other": 7}) is first  # unrelated widths do not matter
    assert sel.select({"a": 4, "b": 3}) == 7
    assert sel.size({"a": 2, "b": 3}) == 5


def test_take_none_returns_the_same_tensor():
    t = torch.randn(4, 3)
    assert take(t, 0, None) is t


def test_take_prefix_is_a_view():
    t = torch.randn(6, 3)
    out = take(t, 0, 4)
    assert out.shape == (4, 3) and out.data_ptr() == t.data_ptr() and out._base is t


def test_take_index_selects_along_dim():
    t = torch.arange(12.0).reshape(3, 4)
    out = take(t, 1, torch.tensor([0, 3]))
    assert out.tolist() == [[0.0, 3.0], [4.0, 7.0], [8.0, 11.0]]


def test_map_list_round_trip():
    cmap = (Segment("a", 4, 2), Segment(None, 3))
    assert map_from_list(map_to_list(cmap)) == cmap
    assert map_to_list(None) is None


segments = st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(1, 5),
                              st.integers(1, 3)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(segments, st.data())
def test_selection_matches_reference_channel_list(segs, data):
    cmap = tuple(Segment(*s) for s in segs)
    sizes = {}
    for s in cmap:  # one group has one size: reuse the first size seen
        if s.group is not None:
            sizes.setdefault(s.group, s.size)
    cmap = tuple(Segment(s.group, sizes.get(s.group, s.size), s.inner) for s in cmap)
    widths = {g: data.draw(st.integers(1, n)) for g, n in sizes.items()}
    expected, offset = [], 0
    for s in cmap:
        w = s.size if s.group is None else widths[s.group]
        expected += list(range(offset, offset + w * s.inner))
        offset += s.size * s.inner
    features = torch.arange(full_size(cmap))
    assert take(features, 0, select(cmap, widths)).tolist() == expected
    assert active_size(cmap, widths) == len(expected)
