"""Hardware-aware sub-network search: objectives, pymoo algorithms, tactics, predictors, store.

    search(supernet_or_space, objectives, tactic=, algorithm=, budget=, store=, ...) -> SearchResult
    select_subnets(result, k, rule="within_tolerance" | "most_accurate_under")   -> [Entry]
    EvaluationStore(path)                                                        SQLite, resumable
    accuracy_objective / macs_objective / params_objective / latency_objective / Objective
    HardwareTarget(backend=, precision=, batch_size=, threads=, device=)

Knows `runtime.elastic` and `runtime.lower`, never the compiler IR. See each module's docstring
for its rules and the README's "Search" section for the tactics and measured figures.
"""
from runtime.search.context import TacticOptions
from runtime.search.evaluator import Entry, ObjectiveError
from runtime.search.objectives import (BUILTIN_OBJECTIVES, HardwareTarget, Objective, ObjectiveLike,
                                       accuracy_objective, latency_objective, macs_objective,
                                       params_objective, resolve_objectives)
from runtime.search.predictors import (PREDICTORS, EnsemblePredictor, GBPredictor, RidgePredictor,
                                       SVRPredictor, make_predictor, predictor_report)
from runtime.search.problem import ALGORITHMS
from runtime.search.result import (SELECTION_RULES, Bounds, SearchResult, hypervolume,
                                   mean_pareto_accuracy, pareto_mask, select_subnets)
from runtime.search.search import search, warm_start_configs
from runtime.search.store import EvaluationStore, StoreMismatchError, fingerprint
from runtime.search.tactics import TACTICS

__all__ = [
    "search", "SearchResult", "Entry", "select_subnets", "mean_pareto_accuracy", "TacticOptions",
    "Objective", "ObjectiveLike", "HardwareTarget", "accuracy_objective", "macs_objective",
    "params_objective", "latency_objective", "resolve_objectives", "BUILTIN_OBJECTIVES",
    "EvaluationStore", "StoreMismatchError", "fingerprint", "ObjectiveError",
    "RidgePredictor", "SVRPredictor", "GBPredictor", "EnsemblePredictor", "make_predictor",
    "predictor_report", "PREDICTORS", "ALGORITHMS", "TACTICS", "SELECTION_RULES",
    "Bounds", "hypervolume", "pareto_mask", "warm_start_configs",
]
