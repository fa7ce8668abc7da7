"""Data loaders: digits, Fashion-MNIST IDX decoding and caching, load_data references, order."""
import gzip
import struct
import subprocess

import numpy as np
import pytest
import torch

from runtime.train.data import (DataRefError, DataUnavailableError, EpochBatchSampler,
                                digits_loaders, fashion_mnist_loaders, load_data, take_batches)


def test_digits_are_normalised_images_with_int64_labels_and_a_seeded_split():
    train, val = digits_loaders(batch_size=50, seed=1)
    x, y = next(iter(train))
    assert x.shape == (50, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    all_x = train.dataset.images
    assert abs(float(all_x.mean())) < 1e-4 and abs(float(all_x.std()) - 1) < 1e-3
    assert len(train.dataset) + len(val.dataset) == 1797
    other = digits_loaders(batch_size=50, seed=2)[1]
    assert not torch.equal(val.dataset.labels, other.dataset.labels[:len(val.dataset)])
    assert digits_loaders(resize=16, channels=3)[0].dataset.images.shape[1:] == (3, 16, 16)


def test_epochs_differ_but_are_reproducible_and_positionable():
    train, _ = digits_loaders(batch_size=32, seed=0)
    epoch0 = [y for _, y in train]
    epoch1 = [y for _, y in train]  # the sampler advanced one epoch
    assert not all(torch.equal(a, b) for a, b in zip(epoch0, epoch1))
    train.sampler.set_epoch(1, start_batch=5)
    assert all(torch.equal(a, b) for a, b in zip([y for _, y in train], epoch1[5:]))
    assert len(epoch0) == len(train) == 1347 // 32  # train drops the incomplete batch


def test_shards_union_is_the_one_process_batch_of_world_times_the_size():
    one = EpochBatchSampler(100, 10, shuffle=True, seed=3, drop_last=True)
    ranks = [EpochBatchSampler(100, 5, shuffle=True, seed=3, drop_last=True) for _ in range(2)]
    for r, s in enumerate(ranks):
        s.shard(r, 2)
    for big, a, b in zip(one, *ranks):
        assert sorted(big.tolist()) == sorted(a.tolist() + b.tolist())
    assert len(one) == len(ranks[0]) == 10
    odd = [EpochBatchSampler(101, 10, shuffle=True, seed=0, drop_last=False) for _ in range(2)]
    for r, s in enumerate(odd):
        s.shard(r, 2)
    assert [len(list(s)) for s in odd] == [len(s) for s in odd] == [5, 5]  # no rank waits


def test_take_batches_is_fixed_and_does_not_move_the_loader():
    train, _ = digits_loaders(batch_size=16)
    train.sampler.set_epoch(7, 3)
    a, b = take_batches(train, 2), take_batches(train, 2)
    assert len(a) == 2 and torch.equal(a[1][0], b[1][0])
    assert (train.sampler.epoch, train.sampler.start_batch) == (7, 3)


def _write_idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_fashion_mnist_idx_files_are_decoded_from_a_root(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 28, 28))
    labels = rng.integers(0, 10, 20)
    _write_idx(tmp_path / "train-images-idx3-ubyte", images, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, gz=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:8], gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:8], gz=False)
    train, val = fashion_mnist_loaders(root=tmp_path, batch_size=4)
    assert val.dataset.images.shape == (8, 1, 28, 28)
    assert val.dataset.labels.tolist() == labels[:8].tolist()
    expected = (images[0] / 255.0 - 0.2860) / 0.3530
    assert np.allclose(val.dataset.images[0, 0].numpy(), expected, atol=1e-5)
    assert len(train) == 5


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DataUnavailableError, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist_loaders(root=tmp_path)


def _installed() -> bool:
    try:
        out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                             text=True).stdout
    except OSError:
        return False
    return "t10k-images" in out


@pytest.mark.skipif(not _installed(), reason="dataset-fashion-mnist is not installed")
def test_installed_fashion_mnist_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERNET_CACHE_DIR", str(tmp_path))
    train, val = fashion_mnist_loaders(train_limit=256, val_limit=100, batch_size=64)
    assert (tmp_path / "fashion-mnist.npz").is_file()
    assert len(train) == 4 and len(val.dataset) == 100
    again, _ = fashion_mnist_loaders(train_limit=256, val_limit=100, batch_size=64)
    assert torch.equal(train.dataset.images, again.dataset.images)


def test_load_data_builtin_and_references(tmp_path):
    train, _ = load_data("digits", batch_size=8)
    assert next(iter(train))[0].shape[0] == 8
    ref = tmp_path / "mydata.py"
    ref.write_text("from runtime.train.data import digits_loaders\n"
                   "def as_dict(batch_size=4):\n"
                   "    t, v = digits_loaders(batch_size=batch_size)\n"
                   "    return {'train': t, 'val': v}\n"
                   "def bad():\n    return 3\n")
    train, val = load_data(f"{ref}:as_dict", batch_size=4)
    assert next(iter(val))[0].shape[0] == 4
    with pytest.raises(DataRefError, match=r"mydata.py:bad' returned int; expected"):
        load_data(f"{ref}:bad")
    with pytest.raises(DataRefError, match="has no callable 'nope'"):
        load_data(f"{ref}:nope")
    with pytest.raises(DataRefError, match=r"must be one of \['digits'"):
        load_data("cifar10")
    with pytest.raises(DataRefError, match="cannot import 'no_such_pkg'"):
        load_data("no_such_pkg:f")
