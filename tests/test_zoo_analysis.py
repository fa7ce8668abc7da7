"""Every pass over every zoo model: golden JSON, conformance (deterministic, input unchanged,
result lints), and the issue's expectations on named models.

Golden files are regenerated on purpose and reviewed as a diff:
    SUPERNET_REGEN_GOLDEN=1 python -m pytest -q tests/test_zoo_analysis.py -k golden
"""
import functools
import json
import os
from pathlib import Path

import pytest
import torch

from bench.models import ZOO, ZOO_INPUT_SHAPES
from compiler.capture import capture
from compiler.ir import lint
from compiler.pipeline import analyze
from passes.find_elastic_kernels import find_elastic_kernels
from passes.find_skippable_blocks import find_skippable_blocks
from passes.find_width_groups import find_width_groups
from passes.lint import lint_result

GOLDEN = Path(__file__).parent / "golden"
PASSES = [find_width_groups, find_skippable_blocks, find_elastic_kernels]


@functools.lru_cache(maxsize=None)
def model(name):
    torch.manual_seed(0)
    return ZOO[name](num_classes=10).eval()


def golden_dict(name: str) -> dict:
    d = analyze(model(name), torch.zeros(ZOO_INPUT_SHAPES[name])).to_dict()
    d.pop("timings_ms")
    d["model"] = name
    return d


def test_golden_files_cover_the_zoo():
    files = {p.stem for p in GOLDEN.glob("*.json")}
    assert files == set(ZOO), f"missing: {set(ZOO) - files}, orphaned: {files - set(ZOO)}"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_golden(name):
    got = golden_dict(name)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("SUPERNET_REGEN_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert json.loads(json.dumps(got)) == json.loads(path.read_text())


def _snapshot(ir):
    return ([ir.info(n) for n in ir.names], sorted(ir.graph.edges), str(ir.gm.graph))


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("pass_", PASSES, ids=lambda p: p.__name__)
def test_conformance(name, pass_):
    m = model(name)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    ir = capture(m, torch.zeros(ZOO_INPUT_SHAPES[name]))
    lint(ir)
    before = _snapshot(ir)
    first, second = pass_(ir), pass_(ir)
    assert first == second and first.to_dict() == second.to_dict()  # deterministic
    assert _snapshot(ir) == before  # the IR is read-only for analyses
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    lint_result(ir, first)


def test_resnet50_expectations():
    a = analyze(ZOO["resnet50"](num_classes=1000).eval(), torch.zeros(1, 3, 224, 224))
    wg = a.width_groups
    assert len(wg.elastic) == 37
    assert sum(len(g.producers) > 1 for g in wg.elastic) == 4
    (fc,) = [g for g in wg.groups if g.frozen]
    assert fc.producers == ("fc",) and fc.reasons == ("model output",)
    assert [s.name for s in a.blocks.stages] == ["layer1", "layer2", "layer3", "layer4"]
    assert [[b.name for b in s.blocks] for s in a.blocks.stages] == [
        ["layer1.1", "layer1.2"], ["layer2.1", "layer2.2", "layer2.3"],
        [f"layer3.{i}" for i in range(1, 6)], ["layer4.1", "layer4.2"]]
    assert all(b.residual for b in a.blocks.blocks)
    assert [k.module_path for k in a.kernels.kernels] == ["conv1"]
    assert not a.unsupported


def test_mobilenet_v2_stride1_inverted_residuals_are_blocks():
    a = analyze(model("mobilenet_v2"), torch.zeros(1, 3, 64, 64))
    names = [b.name for b in a.blocks.blocks]
    assert names == [f"features.{i}" for i in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)]
    assert all(b.residual for b in a.blocks.blocks)


@pytest.mark.parametrize("name", ["densenet", "inception"])
def test_concat_models_use_index_maps(name):
    a = analyze(model(name), torch.zeros(ZOO_INPUT_SHAPES[name]))
    composite = [u for u in a.width_groups.uses if len(u.segments) > 1]
    assert composite, "consumers of a concat see several segments"
    assert any(m[2] > 0 for g in a.width_groups.groups for m in g.members)
    assert not a.unsupported


def test_shufflenet_v2_branches_are_elastic_through_shuffles_and_splits():
    """Rule 22: every branch's output conv (branch1.2, branch2.5) is elastic; shuffles and splits
    are index maps; what stays frozen is the classifier and the widths a split would empty."""
    a = analyze(model("shufflenet_v2"), torch.zeros(ZOO_INPUT_SHAPES["shufflenet_v2"]))
    wg = a.width_groups
    assert not a.unsupported
    elastic = {g.name for g in wg.elastic}
    outputs = [f"stage{s}.{i}.branch2.5" for s, n in ((2, 4), (3, 8), (4, 4)) for i in range(n)]
    outputs += [f"stage{s}.0.branch1.2" for s in (2, 3, 4)]
    assert set(outputs) <= elastic
    assert {r.kind for r in wg.relayouts} == {"permute", "split"} and len(wg.relayouts) == 29
    frozen = {g.name: g.reasons for g in wg.groups if g.frozen}
    assert frozen.pop("fc") == ("model output",)
    assert all("would empty a piece" in r[0] for r in frozen.values())


def test_vit_attention_has_elastic_heads():
    a = analyze(model("vit"), torch.zeros(ZOO_INPUT_SHAPES["vit"]))
    heads = [g for g in a.width_groups.groups if g.kind == "heads"]
    assert [(g.name, g.size, g.head_size, g.choices) for g in heads] == [
        (f"blocks.{i}.attn.qkv", 3, 64, (3, 2, 1)) for i in range(4)]
    assert not a.unsupported


def test_resnext50_grouped_convs_are_elastic_in_every_group():
    a = analyze(ZOO["resnext"](num_classes=1000).eval(), torch.zeros(1, 3, 64, 64))
    wg = a.width_groups
    assert len(wg.elastic) == 37 and not a.unsupported  # all but the classifier output
    grouped = [g for g in wg.elastic if g.groups > 1]
    assert len(grouped) == 32 and {g.groups for g in grouped} == {32}
    first = wg.group("layer1.0.conv1")
    assert (first.size, first.choices) == (4, (4, 3, 2, 1))  # channels per group of 32
