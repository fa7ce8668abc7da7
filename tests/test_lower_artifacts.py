"""write_artifacts' PyTorch format on a channels-last model (how fit_model trains the demo's)."""
import warnings

import torch
from torch import nn

from runtime.lower.artifacts import write_artifacts


def test_channels_last_model_saves_cleanly_and_computes_the_same(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3),
                          nn.Flatten(), nn.LazyLinear(3)).eval()
    x = torch.randn(2, 3, 10, 10)
    model(x)  # materialise the lazy layer
    model = model.to(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_artifacts(model, x[:1], tmp_path, formats=["pytorch"])
    assert not [w for w in caught if "complete tensor" in str(w.message)], \
        [str(w.message) for w in caught]
    loaded = torch.export.load(paths["pytorch"]).module()
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    assert not model[0].weight.is_contiguous()  # the caller's module is left as it was
