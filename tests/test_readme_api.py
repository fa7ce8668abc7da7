"""The README's Python example (BootstrapNAS Listing 1 shape: the user's own train and validate
functions) runs as written, on digits, and does what it says."""
from __future__ import annotations

import torch


def test_listing_one_shape_runs():
    # --- README example begins (kept in sync by hand; this test is its proof) ---
    from bench.demo import fmnist_resnet
    from compiler.pipeline import compile_supernet
    from runtime.search import Objective, search, select_subnets
    from runtime.train import get_strategy
    from runtime.train.data import digits_loaders
    from runtime.train.evaluate import evaluate_subnet

    train_loader, val_loader = digits_loaders(batch_size=64)
    model = fmnist_resnet(widths=(8, 16, 32), blocks=(1, 1, 1)).eval()   # the user's trained model
    net = compile_supernet(model, torch.zeros(1, 1, 8, 8), {"min_width": 4, "width_divisor": 4})

    def train_epoch(net, loader, strategy, optimizer):          # the user's own training loop
        net.train()
        for images, labels in loader:
            strategy.training_step(net, images, labels, torch.nn.functional.cross_entropy, optimizer)

    def validate(net, config):                                  # the user's own validation
        return evaluate_subnet(net, config, val_loader, calibration_loader=train_loader,
                               calibration_batches=2).top1

    strategy = get_strategy("sandwich", n=3)                    # largest + smallest + 1 random
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(2):
        train_epoch(net, train_loader, strategy, optimizer)

    accuracy = Objective("accuracy", lambda configs: [validate(net, c) for c in configs],
                         minimize=False)
    result = search(net, [accuracy, "macs"], tactic="concurrent", budget=16, population=8,
                    progress=False)
    best = select_subnets(result, 1, tolerance=3.0)[0]          # fewest MACs within 3 pt
    subnet = net.extract(best.config)                           # a plain nn.Module
    # --- README example ends ---
    assert result.validations <= 16 and result.objectives == ("accuracy", "macs")
    assert best.values["macs"] <= net.macs(net.max_config())
    assert best.values["accuracy"] > 30  # trained for two epochs from scratch: far above chance
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad(), net.activate(best.config):
        net.eval()
        torch.testing.assert_close(subnet.eval()(x), net(x), rtol=1e-5, atol=1e-5)
