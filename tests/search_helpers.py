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
