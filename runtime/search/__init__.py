"""Hardware-aware sub-network search: objectives, pymoo algorithms, tactics, predictors, store.

    search(supernet_or_space, objectives, tactic=, algorithm=, budget=, store=, ...) -> SearchResult
    select_subnets(result, k, rule="within_tolerance" | "most_accurate_under")   -> [Entry]
    EvaluationStore(path)                                                        SQLite, resumable
    accuracy_objective / macs_objective / params_objective / latency_objective / Objective
    HardwareTarget(backend=, precision=, batch_size=, threads=, device=)

Knows `runtime.elastic` and `runtime.lower`, never the compiler IR. Names are imported lazily
(PEP 562), so ``supernet --help`` does not load pymoo and scikit-learn. See each module's
docstring for its rules and the README's "Search" section for the tactics and measured figures.
"""
import importlib

_EXPORTS = {
    "runtime.search.context": ["TacticOptions"],
    "runtime.search.evaluator": ["Entry", "ObjectiveError"],
    "runtime.search.objectives": ["BUILTIN_OBJECTIVES", "HardwareTarget", "Objective",
                                  "ObjectiveLike", "accuracy_objective", "latency_objective",
                                  "macs_objective", "params_objective", "resolve_objectives"],
    "runtime.search.predictors": ["PREDICTORS", "EnsemblePredictor", "GBPredictor",
                                  "RidgePredictor", "SVRPredictor", "make_predictor",
                                  "predictor_report"],
    "runtime.search.names": ["ALGORITHMS", "TACTICS"],
    "runtime.search.result": ["SELECTION_RULES", "Bounds", "SearchResult", "hypervolume",
                              "mean_pareto_accuracy", "pareto_mask", "select_subnets"],
    "runtime.search.search": ["search", "warm_start_configs"],
    "runtime.search.store": ["EvaluationStore", "StoreMismatchError", "fingerprint"],
    "runtime.search.plots": ["plot_front", "plot_hypervolume"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'runtime.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
