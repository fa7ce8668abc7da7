"""Super-network training: data, samplers, strategies, the step, schedules, the loop, evaluation.

Knows `runtime.elastic` and torch, never the compiler IR or the passes. See each module's
docstring for its rules; the README's "Training" section for usage.
"""
from runtime.train.calibrate import calibrate_batch_norm
from runtime.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from runtime.train.data import (DataRefError, DataUnavailableError, EpochBatchSampler,
                                digits_loaders, fashion_mnist_loaders, load_data, take_batches)
from runtime.train.distributed import DistContext, average_gradients, setup_distributed
from runtime.train.evaluate import (EvalResult, SubnetEvaluator, evaluate_model, evaluate_subnet,
                                    extract_calibrated, spanning_configs)
from runtime.train.loop import TrainResult, train_supernet
from runtime.train.plan import plan_epochs, step_seconds
from runtime.train.progressive import ProgressiveShrinking, Stage
from runtime.train.samplers import (CompoundSampler, LimitedSampler, MaxSampler, MinSampler,
                                    Sampler, UniformSampler, make_sampler)
from runtime.train.schedules import (ConstantSchedule, CosineSchedule, ExponentialSchedule,
                                     StagedSchedule, Warmup, epsilon_ramp, make_schedule)
from runtime.train.step import (NonFiniteLossError, StepOptions, StepResult, Task, run_step,
                               zero_init_residual_bn)
from runtime.train.strategies import (DelayedEpsilonShrinking, RandomSubnets, Sandwich,
                                      StepContext, Strategy, UpperAttentive, get_strategy,
                                      strategy_names)

__all__ = [
    "calibrate_batch_norm", "CheckpointError", "latest_checkpoint", "load_checkpoint",
    "DataRefError", "DataUnavailableError", "EpochBatchSampler", "digits_loaders",
    "fashion_mnist_loaders", "load_data", "take_batches",
    "DistContext", "average_gradients", "setup_distributed",
    "EvalResult", "evaluate_model", "evaluate_subnet", "spanning_configs", "SubnetEvaluator",
    "extract_calibrated",
    "TrainResult", "train_supernet",
    "plan_epochs", "step_seconds",
    "ProgressiveShrinking", "Stage",
    "Sampler", "UniformSampler", "MaxSampler", "MinSampler", "CompoundSampler", "LimitedSampler",
    "make_sampler",
    "ConstantSchedule", "CosineSchedule", "ExponentialSchedule", "StagedSchedule", "Warmup",
    "epsilon_ramp", "make_schedule",
    "NonFiniteLossError", "StepOptions", "StepResult", "Task", "run_step", "zero_init_residual_bn",
    "Strategy", "StepContext", "Sandwich", "UpperAttentive", "DelayedEpsilonShrinking",
    "RandomSubnets", "get_strategy", "strategy_names",
]
