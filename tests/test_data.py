"""The data layer: official file formats, offline folders, EMNIST orientation, class names, clear errors."""
from __future__ import annotations

import gzip
import string

import numpy as np
import pytest
import torch

from cgan.data import (CIFAR10_CLASSES, EMNIST_MERGED, FASHION_CLASSES, DatasetError, load_dataset, read_idx,
                       write_idx)
from conftest import SHARED_DATA, needs_shared_data, synthetic_images, write_mnist_like


def test_idx_round_trip_gz_and_raw(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for name in ("x-idx3-ubyte", "x-idx3-ubyte.gz"):
        write_idx(tmp_path / name, a)
        assert np.array_equal(read_idx(tmp_path / name), a)


def test_truncated_idx_names_the_file(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t.idx", a)
    data = (tmp_path / "t.idx").read_bytes()
    (tmp_path / "t.idx").write_bytes(data[:-100])
    with pytest.raises(DatasetError, match="t.idx.*truncated"):
        read_idx(tmp_path / "t.idx")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(data)[:1000])
    with pytest.raises(DatasetError, match="bad.gz"):
        read_idx(tmp_path / "bad.gz")


def test_offline_folder_gz_and_plain_all_splits(tmp_path):
    for gz in (True, False):
        folder = write_mnist_like(tmp_path / f"gz{gz}", n_train=40, n_test=20, gz=gz)
        train = load_dataset("mnist", "train", folder)
        both = load_dataset("mnist", "all", folder)
        assert train.images.shape == (40, 1, 28, 28) and train.images.dtype == torch.uint8
        assert len(load_dataset("mnist", "test", folder)) == 20 and len(both) == 60
        assert train.labels.dtype == torch.int64 and train.class_names == tuple(string.digits)


def test_missing_train_split_names_files_and_suggests_test(tmp_path):
    folder = write_mnist_like(tmp_path / "m", parts=("test",))
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", "train", folder)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg and "--split test" in msg
    with pytest.raises(DatasetError, match="--split test"):
        load_dataset("mnist", "all", folder)


def test_unknown_names_list_the_choices(tmp_path):
    with pytest.raises(DatasetError, match="fashion-mnist"):
        load_dataset("mnist2", "train", tmp_path)
    with pytest.raises(DatasetError, match="train, test, all"):
        load_dataset("mnist", "validation", tmp_path)
    with pytest.raises(DatasetError, match="bymerge"):
        load_dataset("emnist", "train", tmp_path, emnist_split="nope")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", "train", tmp_path / "absent")


def test_no_network_error_suggests_data_dir(tmp_path, monkeypatch):
    """The download path really runs torchvision's downloader; with no network it must say what to do."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled for this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("kmnist", "train", cache_dir=tmp_path)


def test_emnist_letters_are_transposed_and_relabelled(tmp_path):
    images, labels = synthetic_images(26, classes=26)
    images = images[:, 0]
    stored = images.transpose(0, 2, 1)  # what the official files hold
    write_idx(tmp_path / "emnist-letters-test-images-idx3-ubyte.gz", stored)
    write_idx(tmp_path / "emnist-letters-test-labels-idx1-ubyte.gz", labels + 1)  # official labels are 1..26
    ds = load_dataset("emnist", "test", tmp_path, emnist_split="letters")
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert np.array_equal(ds.labels.numpy(), labels)
    assert ds.class_names == tuple(string.ascii_lowercase)


def test_emnist_split_files_are_never_substituted(tmp_path):
    write_mnist_like(tmp_path, prefix="emnist-bymerge-", classes=47)
    with pytest.raises(DatasetError, match="emnist-balanced-test-images"):
        load_dataset("emnist", "test", tmp_path, emnist_split="balanced")
    assert len(load_dataset("emnist", "test", tmp_path, emnist_split="bymerge")) == 48


def test_cifar10_binary_batches(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name, n in [(f"data_batch_{i}.bin", 4) for i in range(1, 6)] + [("test_batch.bin", 3)]:
        rec = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        rec[:, 0] = np.arange(n) % 10
        rec.tofile(folder / name)
    ds = load_dataset("cifar10", "train", tmp_path)
    assert ds.images.shape == (20, 3, 32, 32) and ds.class_names == CIFAR10_CLASSES
    first = np.fromfile(folder / "data_batch_1.bin", dtype=np.uint8)[:3073]
    assert np.array_equal(ds.images[0].numpy().ravel(), first[1:])  # R, G, B planes in order
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetError, match="test_batch.bin"):
        load_dataset("cifar10", "test", tmp_path)


# --------------------------------------------------------------------------- the real offline copies

@needs_shared_data("mnist")
def test_real_mnist_test_split():
    ds = load_dataset("mnist", "test", SHARED_DATA / "mnist")
    assert len(ds) == 10_000 and ds.images.shape[1:] == (1, 28, 28)
    assert ds.images.min() == 0 and ds.images.max() == 255
    assert torch.bincount(ds.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    with pytest.raises(DatasetError, match="--split test"):
        load_dataset("mnist", "train", SHARED_DATA / "mnist")


@needs_shared_data("fashion-mnist")
def test_real_fashion_mnist_all_splits():
    ds = load_dataset("fashion-mnist", "all", SHARED_DATA / "fashion-mnist")
    assert len(ds) == 70_000 and ds.class_names == FASHION_CLASSES
    assert torch.bincount(ds.labels).tolist() == [7000] * 10
    assert ds.images.dtype == torch.uint8 and ds.images.max() == 255


@needs_shared_data("emnist", "mnist")
def test_real_emnist_is_upright():
    """EMNIST digits must look like MNIST digits: each class's mean image correlates better with MNIST's
    mean image of the same digit than its transpose does. Without the transpose fix this fails."""
    ds = load_dataset("emnist", "test", SHARED_DATA / "emnist", emnist_split="bymerge")
    assert len(ds) == 116_323 and ds.num_classes == 47 and ds.class_names == EMNIST_MERGED
    mapping = (SHARED_DATA / "emnist" / "emnist-bymerge-mapping.txt").read_text().split("\n")
    assert [chr(int(line.split()[1])) for line in mapping if line.strip()] == list(ds.class_names)
    mnist = load_dataset("mnist", "test", SHARED_DATA / "mnist")
    wins = 0
    for k in range(10):
        e = ds.images[ds.labels == k][:, 0].float().mean(0).flatten()
        e_t = ds.images[ds.labels == k][:, 0].float().mean(0).T.flatten()
        m = mnist.images[mnist.labels == k][:, 0].float().mean(0).flatten()
        wins += int(torch.corrcoef(torch.stack([e, m]))[0, 1] > torch.corrcoef(torch.stack([e_t, m]))[0, 1])
    assert wins >= 9
    # and the letter "I" (index 18) is a vertical stroke: more ink variation across columns than rows
    i_mean = ds.images[ds.labels == 18][:, 0].float().mean(0)
    assert i_mean.mean(0).std() > 2 * i_mean.mean(1).std()
