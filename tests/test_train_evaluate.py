"""evaluate_subnet: calibrates, measures, and restores the shared state bit for bit."""
import copy

import torch

from runtime.train import (SubnetEvaluator, calibrate_batch_norm, digits_loaders, evaluate_model,
                           evaluate_subnet, extract_calibrated, spanning_configs, take_batches)
from tests.train_helpers import supernet


def test_evaluate_subnet_matches_the_calibrated_extracted_subnetwork_and_restores_state():
    net = supernet()
    train, val = digits_loaders(batch_size=64)
    config = net.space.sample(3)
    net.activate(net.space.sample(4))
    previous = net.config
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    result = evaluate_subnet(net, config, val, calibration_loader=train, calibration_batches=3)
    assert net.config == previous and net.training
    assert all(torch.equal(v, buffers[k]) for k, v in net.state_dict().items())

    ref = copy.deepcopy(net)
    with ref.activate(config):
        calibrate_batch_norm(ref, [x for x, _ in take_batches(train, 3)])
        expected = evaluate_model(ref.extract(config), val)
    assert result.samples == len(val.dataset) == expected.samples
    assert abs(result.top1 - expected.top1) < 1e-9
    assert abs(result.loss - expected.loss) < 1e-4
    again = evaluate_subnet(net, config, val, calibration_loader=train, calibration_batches=3)
    assert again == result


def test_spanning_configs_run_from_min_to_max_macs():
    net = supernet()
    configs = spanning_configs(net, 6, seed=0)
    macs = [net.macs(c) for c in configs]
    assert configs[0] == net.min_config() and configs[-1] == net.max_config()
    assert len(configs) == 6 and macs == sorted(macs) and len(set(configs)) == 6


def test_subnet_evaluator_equals_evaluate_subnet_and_extract_calibrated_matches():
    net = supernet()
    train, val = digits_loaders(batch_size=64)
    evaluator = SubnetEvaluator(net, val, calibration_loader=train, calibration_batches=2,
                                max_batches=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for seed in (1, 2):
        config = net.space.sample(seed)
        direct = evaluate_subnet(net, config, val, calibration_loader=train,
                                 calibration_batches=2, max_batches=3)
        assert evaluator(config) == direct and direct.samples == 192
        sub = extract_calibrated(net, config, train, calibration_batches=2)
        assert abs(evaluate_model(sub, val, max_batches=3).top1 - direct.top1) < 1e-9
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
