"""Small synthetic search problems shared by the search tests."""
from bench.search_synthetic import SyntheticProblem

SMALL = dict(inner_generations=15, inner_population=30)


def problem(noise: float = 0.15) -> SyntheticProblem:
    """21 dimensions (3 stages x 3 blocks), accuracy (validation) and MACs (cheap)."""
    return SyntheticProblem(noise=noise, stages=3, blocks=3)


def summary(result):
    """What must be equal between two runs that should be identical."""
    return ([(dict(e.config), dict(e.values), e.error) for e in result.history],
            [dict(e.config) for e in result.pareto], result.hypervolume)


def tiny_supernet():
    """A 3-layer MLP super-network with two width dimensions (milliseconds to build)."""
    import torch
    import torch.fx as fx

    from runtime.elastic import Bindings, Dimension, OpBinding, SearchSpace, Segment, SuperNetwork, wrap

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
                                torch.nn.ReLU(), torch.nn.Linear(8, 2))
    gm = fx.symbolic_trace(model)
    for name in ("0", "2", "4"):
        gm._modules[name] = wrap(gm._modules[name])
    space = SearchSpace([Dimension("h1", "width", (8, 6, 4, 2)), Dimension("h2", "width", (8, 4))])
    b = Bindings(ops=[OpBinding("0", out_map=[Segment("h1", 8)]),
                      OpBinding("2", in_map=[Segment("h1", 8)], out_map=[Segment("h2", 8)]),
                      OpBinding("4", in_map=[Segment("h2", 8)])],
                 out_spatial={"0": {None: 1}, "2": {None: 1}, "4": {None: 1}})
    return SuperNetwork(gm, space, b, meta={"input_shapes": [[1, 4]]}).eval()


def width_score(supernet):
    """A synthetic 'accuracy' objective factory for the CLI: more channels score higher."""
    from runtime.search import Objective

    return Objective("score", lambda cs: [c["h1"] + 0.5 * c["h2"] for c in cs], minimize=False)
