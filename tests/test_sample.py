"""cgan.sample and the Python API: shapes, class-major order, seed addressing, export then sample."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import cgan
from cgan import networks
from cgan.sample import main as sample_main


def npz(tmp_path, source, *args):
    out = tmp_path / f"s{len(list(tmp_path.iterdir()))}.npz"
    assert sample_main([str(source), "--out", str(out), *args]) == 0
    d = np.load(out)
    return d["images"], d["labels"]


def test_npz_layout(tmp_path, tiny_export):
    images, labels = npz(tmp_path, tiny_export, "--per-class", "3", "--seed", "5")
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [k for k in range(10) for _ in range(3)]


def test_deterministic_and_independent_of_n(tmp_path, tiny_export):
    a, _ = npz(tmp_path, tiny_export, "--per-class", "3", "--seed", "7")
    b, _ = npz(tmp_path, tiny_export, "--per-class", "3", "--seed", "7")
    c, _ = npz(tmp_path, tiny_export, "--per-class", "17", "--seed", "7")
    d, _ = npz(tmp_path, tiny_export, "--per-class", "3", "--seed", "8")
    assert np.array_equal(a, b)
    for k in range(10):
        assert np.array_equal(a[3 * k:3 * k + 3], c[17 * k:17 * k + 3])  # image (S, k, j) the same for N=3, N=17
    assert not np.array_equal(a, d)
    e, le = npz(tmp_path, tiny_export, "--per-class", "3", "--seed", "7", "--classes", "7,2")
    assert le.tolist() == [7, 7, 7, 2, 2, 2]
    assert np.array_equal(e[:3], a[21:24]) and np.array_equal(e[3:], a[6:9])


def test_run_checkpoint_and_export_folders_agree(tmp_path, tiny_run, tiny_export):
    from cgan.checkpoints import latest_checkpoint

    a, _ = npz(tmp_path, tiny_run, "--per-class", "2")
    b, _ = npz(tmp_path, latest_checkpoint(tiny_run), "--per-class", "2")
    c, _ = npz(tmp_path, tiny_export, "--per-class", "2")
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_grid_png(tmp_path, tiny_export):
    out = tmp_path / "g.png"
    assert sample_main([str(tiny_export), "--per-class", "4", "--classes", "3,7", "--grid", str(out)]) == 0
    img = Image.open(out)
    assert img.size == (4 * 30 + 2, 2 * 30 + 2) and img.mode == "L"


def test_bad_input_is_a_clear_error(tmp_path, tiny_export, capsys):
    assert sample_main([str(tiny_export), "--classes", "3,x", "--out", str(tmp_path / "x.npz")]) == 2
    assert "unknown class 'x'" in capsys.readouterr().err
    assert sample_main([str(tiny_export), "--classes", "12", "--out", str(tmp_path / "x.npz")]) == 2
    assert sample_main([str(tmp_path / "missing"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sample_main([str(tiny_export), "--per-class", "100000000", "--out", str(tmp_path / "x.npz")]) == 2
    assert "limit" in capsys.readouterr().err


def test_python_api(tiny_export):
    s = cgan.load(tiny_export)
    assert s.class_names == list("0123456789") and s.dataset == "mnist"
    images, labels = s.sample(["3", 5], per_class=2, seed=1)
    assert images.shape == (4, 28, 28) and labels.tolist() == [3, 3, 5, 5]
    real = s.real_samples()
    assert real is not None and real[0].shape == (40, 28, 28) and real[0].dtype == np.uint8
    with pytest.raises(ValueError, match="truncation"):
        s.sample([0], 1, truncation=0)
    with pytest.raises(ValueError, match="seed"):
        s.sample([0], 1, seed=-1)


@pytest.mark.parametrize("size,channels", [(28, 1), (64, 3)])  # 64 px: the extra upsampling stage too
def test_the_folded_generator_computes_the_same_function(size, channels):
    torch.manual_seed(0)
    g = networks.build_generator("sngan", 16, 5, channels, size, 8)
    for _ in range(3):  # non-trivial running statistics
        g(torch.randn(16, 16), torch.randint(0, 5, (16,)))
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, networks.ConditionalBatchNorm2d):
                m.gain.weight.normal_(0, 0.3), m.bias.weight.normal_(0, 0.3)
    ups = [m for m in g.modules() if isinstance(m, networks.UpsampleConv2d)]
    assert len(ups) == (3 if size == 64 else 2)
    x = torch.randn(4, ups[0].in_channels, 5, 5)  # unfolded: exactly the upsampling and the conv it always was
    assert torch.equal(ups[0](x), F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), ups[0].weight,
                                           ups[0].bias, padding=1))
    z, y = torch.randn(12, 16), torch.randint(0, 5, (12,))
    blend = torch.softmax(torch.randn(12, 5), 1)  # the studio's class morph passes class weights
    keys = list(g.state_dict())
    with torch.no_grad():
        plain = g.eval()(z, y), g(z, blend)
        networks.fold_for_inference(g)
        assert all(m.folded_weight is not None for m in ups)
        folded = g(z, y), g(z, blend)
        for a, b in zip(plain, folded):
            assert not torch.equal(a, b) and torch.allclose(a, b, atol=1e-5, rtol=0)  # float rounding only
        assert list(g.state_dict()) == keys  # nothing folded is saved
        g.train().eval()  # train() drops the fold: the weights may change
        assert all(m.folded_weight is None for m in ups)
        assert torch.equal(g(z, y), plain[0])


def test_cgan_load_serves_the_folded_generator(tiny_export):
    g = cgan.load(tiny_export).generator
    assert not g.training
    assert all(m.folded_weight is not None for m in g.modules() if isinstance(m, networks.UpsampleConv2d))
    assert all(m.folded_inv_std is not None for m in g.modules()
               if isinstance(m, networks.ConditionalBatchNorm2d))
