"""The torch.export front end on Hugging Face BERT, GPT-2 and ViT built from small configs offline:
capture, heads/MLP/depth dimensions, and the invariants of ../shared/DESIGN.md (max config ==
model, extract(c) == supernet under c, skipping a block == identity, ONNX == PyTorch)."""
import functools
import re
import warnings

import pytest
import torch
import torch.fx as fx

pytest.importorskip("transformers")

from bench.models import HF_ZOO, hf_example_kwargs  # noqa: E402
from compiler.capture import CaptureError, capture  # noqa: E402
from compiler.ir import lint  # noqa: E402
from compiler.pipeline import analyze, compile_supernet  # noqa: E402
from runtime.elastic import SkipBlock  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)
NAMES = sorted(HF_ZOO)


@functools.lru_cache(maxsize=None)
def hf_model(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HF_ZOO[name]().eval()


@functools.lru_cache(maxsize=None)
def hf_supernet(name, reorder=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = compile_supernet(hf_model(name), (), {"reorder": reorder},
                               example_kwargs=hf_example_kwargs(name))
    return net.eval()


def logits(out):
    """The logits of a Hugging Face output (a loaded super-network returns it as a dict)."""
    if isinstance(out, dict):
        return out["logits"]
    return out.logits if hasattr(out, "logits") else out


def test_auto_falls_back_to_export_and_says_so():
    kw = hf_example_kwargs("hf_bert")
    with pytest.warns(UserWarning, match="falling back to torch.export"):
        ir = capture(hf_model("hf_bert"), example_kwargs=kw)
    assert ir.frontend == "export" and ir.input_shapes == ((2, 8), (2, 8))
    lint(ir)
    kinds = {ir.info(n).kind for n in ir.names}
    assert {"Linear", "LayerNorm", "view", "transpose", "scaled_dot_product_attention"} <= kinds
    q = ir.info("bert_encoder_layer_0_attention_self_query")
    assert q.module_path == "bert.encoder.layer.0.attention.self.query" and q.shape == (2, 8, 64)
    with pytest.raises(CaptureError, match="torch.fx could not trace"):
        capture(hf_model("hf_bert"), example_kwargs=kw, frontend="fx")


def test_gpt2_conv1d_becomes_linear_and_shares_nothing_else():
    ir = capture(hf_model("hf_gpt2"), example_kwargs=hf_example_kwargs("hf_gpt2"),
                 frontend="export")
    assert ir.info("transformer_h_0_attn_c_attn").kind == "Linear"
    model = hf_model("hf_gpt2")
    ln = ir.gm.get_submodule("transformer.h.0.ln_1")
    assert ln is model.transformer.h[0].ln_1  # original modules, shared parameters


@pytest.mark.parametrize("name", NAMES)
def test_space_has_heads_mlp_width_and_depth(name):
    net = hf_supernet(name)
    kinds = {d.kind for d in net.space}
    assert {"heads", "width", "depth"} <= kinds, net.space.to_dict()
    heads = [d for d in net.space if d.kind == "heads"]
    assert len(heads) == 2 and all(d.choices == (4, 3, 2, 1) for d in heads)
    mlp = [d for d in net.space if d.kind == "width" and ("intermediate" in d.name
                                                          or "fc1" in d.name or "c_fc" in d.name)]
    assert len(mlp) == 2


@pytest.mark.parametrize("name", NAMES)
def test_max_config_equals_model(name):
    kw = hf_example_kwargs(name, seed=3)
    with torch.no_grad():
        ref = logits(hf_model(name)(**kw))
        for reorder in (False, True):
            net = hf_supernet(name, reorder)
            torch.testing.assert_close(logits(net(**kw)), ref, **TOL)
    assert ref.abs().max() > 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_extract_matches_supernet_and_costs(name):
    net, kw = hf_supernet(name), hf_example_kwargs(name, seed=1)
    with torch.no_grad():
        for seed in range(4):
            config = net.sample(seed)
            with net.activate(config):
                expected = logits(net(**kw))
            sub = net.extract(config)
            torch.testing.assert_close(logits(sub(**kw)), expected, **TOL)
            assert net.params(config) == sum(p.numel() for p in sub.parameters())
        small = net.extract(net.min_config())
        assert sum(p.numel() for p in small.parameters()) < sum(
            p.numel() for p in hf_model(name).parameters())


def _identity_at(gm: fx.GraphModule, entry: str, exit_: str) -> fx.GraphModule:
    gm = fx.GraphModule(gm, gm.graph.__deepcopy__())
    nodes = {n.name: n for n in gm.graph.nodes}
    nodes[exit_].replace_all_uses_with(nodes[entry])
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


@pytest.mark.parametrize("name", NAMES)
def test_skipping_a_block_equals_identity(name):
    net, kw = hf_supernet(name, reorder=False), hf_example_kwargs(name, seed=2)
    analysis = analyze(hf_model(name), example_kwargs=kw)
    paths = [p for d in net.bindings.depths for p in d.blocks]
    blocks = {"_blocks." + re.sub(r"\W", "_", b.name): b for b in analysis.blocks.blocks}
    assert paths and set(paths) <= set(blocks)
    for path in paths:
        block = blocks[path]
        skip = net.graph_module.get_submodule(path)
        assert isinstance(skip, SkipBlock)
        skip.active = False
        try:
            with torch.no_grad():
                got = logits(net(**kw))
                ref = logits(_identity_at(analysis.ir.gm, block.entry, block.exit)(**kw))
        finally:
            skip.active = True
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_bert_blocks_take_the_attention_mask_as_context():
    analysis = analyze(hf_model("hf_bert"), example_kwargs=hf_example_kwargs("hf_bert"))
    attention = [b for b in analysis.blocks.blocks if b.name.endswith("attention")]
    assert len(attention) == 2 and all(len(b.context) == 1 for b in attention)
    assert not analysis.unsupported


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hf_bert", "hf_vit"])
def test_extracted_subnet_exports_to_onnx(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from runtime.lower import to_onnx

    net, kw = hf_supernet(name), hf_example_kwargs(name, seed=4)
    sub = net.extract(net.sample(5))
    path = to_onnx(sub, tuple(kw.values()), tmp_path / "sub.onnx", dynamic_batch=False,
                   cache=False, atol=1e-4)
    assert path.exists()


@pytest.mark.parametrize("name", NAMES)
def test_conformance_on_the_export_front_end(name):
    from passes.find_elastic_kernels import find_elastic_kernels
    from passes.find_skippable_blocks import find_skippable_blocks
    from passes.find_width_groups import find_width_groups
    from passes.lint import lint_result

    model = hf_model(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ir = capture(model, example_kwargs=hf_example_kwargs(name), frontend="export")
    lint(ir)
    before = ([ir.info(n) for n in ir.names], str(ir.gm.graph))
    for pass_ in (find_width_groups, find_skippable_blocks, find_elastic_kernels):
        first, second = pass_(ir), pass_(ir)
        assert first == second and first.to_dict() == second.to_dict()
        lint_result(ir, first)
    assert ([ir.info(n) for n in ir.names], str(ir.gm.graph)) == before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_save_load_round_trip(tmp_path):
    from runtime.elastic import SuperNetwork

    net, kw = hf_supernet("hf_bert"), hf_example_kwargs("hf_bert", seed=6)
    net.save(tmp_path / "bert.pt")
    loaded = SuperNetwork.load(tmp_path / "bert.pt").eval()
    config = net.sample(3)
    with torch.no_grad(), net.activate(config), loaded.activate(config):
        torch.testing.assert_close(logits(loaded(**kw)), logits(net(**kw)), rtol=0, atol=0)


def test_cli_compiles_with_example_kwargs(tmp_path, capsys):
    from compiler.cli import main

    code = main(["compile", "bench.models:hf_vit", "--example-kwargs",
                 '{"pixel_values": [2, 3, 32, 32]}', "-o", str(tmp_path / "vit.pt")])
    out = capsys.readouterr().out
    assert code == 0 and "compiled bench.models:hf_vit" in out and (tmp_path / "vit.pt").exists()
    code = main(["inspect", "bench.models:hf_bert", "--example-kwargs",
                 '{"input_ids": [2, 8], "attention_mask": [2, 8]}', "--format", "json"])
    assert code == 0 and '"heads"' in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_nothing_unsupported_in_the_hf_models(name):
    analysis = analyze(hf_model(name), example_kwargs=hf_example_kwargs(name))
    assert not analysis.unsupported, [str(u) for u in analysis.unsupported]
