"""64x64 networks: the default (sngan) and the dcgan architectures get one more resampling stage at 64 px,
grey and colour, while every network below 64 px keeps exactly the parameters it always had (so shipped
checkpoints load bit for bit); the studio caps a one-class grid of 64 px images to keep its latency."""
from __future__ import annotations

import pytest
import torch

import cgan
from cgan import networks
from cgan.checkpoints import GENERATOR_FILE, CheckpointError, write_folder
from cgan.config import TrainConfig
from cgan.data import DATASETS, Dataset
from cgan.training import fit

CONV = ("sngan", "dcgan")
NEW_MODULES = ("extra", "stem")  # the third stage's modules: present only from 64 px on

# The state_dict keys and shapes at 28 px grey and 32 px colour (z_dim 128, 10 classes, default widths), as
# they were before 64 px support: written down from the networks of that commit, in state_dict order.
BEFORE_64 = {
    ("sngan", 28, 1): (
        {"fc.weight": (6272, 128), "fc.bias": (6272,), "bn0.bn.running_mean": (128,), "bn0.bn.running_var": (128,),
         "bn0.bn.num_batches_tracked": (), "bn0.gain.weight": (128, 10), "bn0.bias.weight": (128, 10),
         "conv0.weight": (128, 128, 3, 3), "conv0.bias": (128,), "bn1.bn.running_mean": (128,),
         "bn1.bn.running_var": (128,), "bn1.bn.num_batches_tracked": (), "bn1.gain.weight": (128, 10),
         "bn1.bias.weight": (128, 10), "conv1.weight": (64, 128, 3, 3), "conv1.bias": (64,),
         "bn2.bn.running_mean": (64,), "bn2.bn.running_var": (64,), "bn2.bn.num_batches_tracked": (),
         "bn2.gain.weight": (64, 10), "bn2.bias.weight": (64, 10), "conv2.weight": (32, 64, 3, 3),
         "conv2.bias": (32,), "bn3.bn.running_mean": (32,), "bn3.bn.running_var": (32,),
         "bn3.bn.num_batches_tracked": (), "bn3.gain.weight": (32, 10), "bn3.bias.weight": (32, 10),
         "out.weight": (1, 32, 3, 3), "out.bias": (1,)},
        {"features.0.bias": (64,), "features.0.parametrizations.weight.original": (64, 1, 3, 3),
         "features.0.parametrizations.weight.0._u": (64,), "features.0.parametrizations.weight.0._v": (9,),
         "features.2.bias": (128,), "features.2.parametrizations.weight.original": (128, 64, 4, 4),
         "features.2.parametrizations.weight.0._u": (128,), "features.2.parametrizations.weight.0._v": (1024,),
         "features.4.bias": (128,), "features.4.parametrizations.weight.original": (128, 128, 3, 3),
         "features.4.parametrizations.weight.0._u": (128,), "features.4.parametrizations.weight.0._v": (1152,),
         "features.6.bias": (256,), "features.6.parametrizations.weight.original": (256, 128, 4, 4),
         "features.6.parametrizations.weight.0._u": (256,), "features.6.parametrizations.weight.0._v": (2048,),
         "features.8.bias": (256,), "features.8.parametrizations.weight.original": (256, 256, 3, 3),
         "features.8.parametrizations.weight.0._u": (256,), "features.8.parametrizations.weight.0._v": (2304,),
         "linear.bias": (1,), "linear.parametrizations.weight.original": (1, 256),
         "linear.parametrizations.weight.0._u": (1,), "linear.parametrizations.weight.0._v": (256,),
         "embed.parametrizations.weight.original": (256, 10), "embed.parametrizations.weight.0._u": (256,),
         "embed.parametrizations.weight.0._v": (10,)},
    ),
    ("sngan", 32, 3): (
        {"fc.weight": (8192, 128), "fc.bias": (8192,), "bn0.bn.running_mean": (128,), "bn0.bn.running_var": (128,),
         "bn0.bn.num_batches_tracked": (), "bn0.gain.weight": (128, 10), "bn0.bias.weight": (128, 10),
         "conv0.weight": (128, 128, 3, 3), "conv0.bias": (128,), "bn1.bn.running_mean": (128,),
         "bn1.bn.running_var": (128,), "bn1.bn.num_batches_tracked": (), "bn1.gain.weight": (128, 10),
         "bn1.bias.weight": (128, 10), "conv1.weight": (64, 128, 3, 3), "conv1.bias": (64,),
         "bn2.bn.running_mean": (64,), "bn2.bn.running_var": (64,), "bn2.bn.num_batches_tracked": (),
         "bn2.gain.weight": (64, 10), "bn2.bias.weight": (64, 10), "conv2.weight": (32, 64, 3, 3),
         "conv2.bias": (32,), "bn3.bn.running_mean": (32,), "bn3.bn.running_var": (32,),
         "bn3.bn.num_batches_tracked": (), "bn3.gain.weight": (32, 10), "bn3.bias.weight": (32, 10),
         "out.weight": (3, 32, 3, 3), "out.bias": (3,)},
        {"features.0.bias": (64,), "features.0.parametrizations.weight.original": (64, 3, 3, 3),
         "features.0.parametrizations.weight.0._u": (64,), "features.0.parametrizations.weight.0._v": (27,),
         "features.2.bias": (128,), "features.2.parametrizations.weight.original": (128, 64, 4, 4),
         "features.2.parametrizations.weight.0._u": (128,), "features.2.parametrizations.weight.0._v": (1024,),
         "features.4.bias": (128,), "features.4.parametrizations.weight.original": (128, 128, 3, 3),
         "features.4.parametrizations.weight.0._u": (128,), "features.4.parametrizations.weight.0._v": (1152,),
         "features.6.bias": (256,), "features.6.parametrizations.weight.original": (256, 128, 4, 4),
         "features.6.parametrizations.weight.0._u": (256,), "features.6.parametrizations.weight.0._v": (2048,),
         "features.8.bias": (256,), "features.8.parametrizations.weight.original": (256, 256, 3, 3),
         "features.8.parametrizations.weight.0._u": (256,), "features.8.parametrizations.weight.0._v": (2304,),
         "linear.bias": (1,), "linear.parametrizations.weight.original": (1, 256),
         "linear.parametrizations.weight.0._u": (1,), "linear.parametrizations.weight.0._v": (256,),
         "embed.parametrizations.weight.original": (256, 10), "embed.parametrizations.weight.0._u": (256,),
         "embed.parametrizations.weight.0._v": (10,)},
    ),
    ("dcgan", 28, 1): (
        {"fc.0.weight": (6272, 138), "fc.1.weight": (6272,), "fc.1.bias": (6272,), "fc.1.running_mean": (6272,),
         "fc.1.running_var": (6272,), "fc.1.num_batches_tracked": (), "up.0.weight": (128, 64, 4, 4),
         "up.1.weight": (64,), "up.1.bias": (64,), "up.1.running_mean": (64,), "up.1.running_var": (64,),
         "up.1.num_batches_tracked": (), "up.3.weight": (64, 1, 4, 4), "up.3.bias": (1,)},
        {"net.0.weight": (64, 11, 4, 4), "net.0.bias": (64,), "net.2.weight": (128, 64, 4, 4),
         "net.3.weight": (128,), "net.3.bias": (128,), "net.3.running_mean": (128,), "net.3.running_var": (128,),
         "net.3.num_batches_tracked": (), "net.6.weight": (1, 6272), "net.6.bias": (1,)},
    ),
    ("dcgan", 32, 3): (
        {"fc.0.weight": (8192, 138), "fc.1.weight": (8192,), "fc.1.bias": (8192,), "fc.1.running_mean": (8192,),
         "fc.1.running_var": (8192,), "fc.1.num_batches_tracked": (), "up.0.weight": (128, 64, 4, 4),
         "up.1.weight": (64,), "up.1.bias": (64,), "up.1.running_mean": (64,), "up.1.running_var": (64,),
         "up.1.num_batches_tracked": (), "up.3.weight": (64, 3, 4, 4), "up.3.bias": (3,)},
        {"net.0.weight": (64, 13, 4, 4), "net.0.bias": (64,), "net.2.weight": (128, 64, 4, 4),
         "net.3.weight": (128,), "net.3.bias": (128,), "net.3.running_mean": (128,), "net.3.running_var": (128,),
         "net.3.num_batches_tracked": (), "net.6.weight": (1, 8192), "net.6.bias": (1,)},
    ),
}


def shapes(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def pair(arch: str, size: int, channels: int, classes: int = 10, width: int = 8, z_dim: int = 16):
    torch.manual_seed(0)
    return (networks.build_generator(arch, z_dim, classes, channels, size, width),
            networks.build_discriminator(arch, classes, channels, size, width))


@pytest.mark.parametrize("key", list(BEFORE_64), ids=lambda k: f"{k[0]}-{k[1]}px-{k[2]}ch")
def test_below_64_px_the_networks_are_exactly_what_they_were(key):
    arch, size, channels = key
    a = networks.ARCHITECTURES[arch]
    with torch.device("meta"):
        g = networks.build_generator(arch, 128, 10, channels, size, a.g_width)
        d = networks.build_discriminator(arch, 10, channels, size, a.d_width)
    want_g, want_d = BEFORE_64[key]
    assert list(shapes(g).items()) == list(want_g.items())  # same names, shapes and order
    assert list(shapes(d).items()) == list(want_d.items())
    assert g.extra is None and d.stem is None
    assert not any(k.split(".")[0] in NEW_MODULES for k in [*shapes(g), *shapes(d)])
    assert networks.conv_stages(size) == 2 and g.base == size // 4


def test_the_stage_rule():
    assert [networks.conv_stages(s) for s in (8, 28, 32, 36, 48, 60, 64, 68, 96, 128)] == [2] * 6 + [3, 2, 3, 3]


@pytest.mark.parametrize("arch", CONV)
@pytest.mark.parametrize("channels", [1, 3])
def test_64_px_networks_have_one_more_stage(arch, channels):
    g, d = pair(arch, 64, channels)
    assert g.base == 8  # starts from 8x8, not 16x16
    assert g.extra is not None and d.stem is not None
    assert any(k.startswith("extra.") for k in g.state_dict()) and any(k.startswith("stem.") for k in d.state_dict())
    z, y = torch.randn(6, 16), torch.tensor([0, 1, 2, 7, 8, 9])
    x = g(z, y)  # training mode: batch statistics
    assert x.shape == (6, channels, 64, 64) and x.abs().max() <= 1
    assert d(x, y).shape == (6,)
    x.mean().backward()  # every new parameter takes part
    assert all(p.grad is not None for n, p in g.named_parameters() if n.startswith("extra."))
    g.eval()
    d.eval()
    with torch.no_grad():
        weights = networks.class_weights(y, 10)
        assert torch.equal(g(z, y), g(z, weights))  # int labels and one-hot class weights agree
        assert torch.allclose(d(g(z, y), y), d(g(z, y), weights))
        blend = 0.5 * weights + 0.5 * networks.class_weights(y.flip(0), 10)  # a class morph's weights
        assert g(z, blend).shape == (6, channels, 64, 64) and d(g(z, blend), blend).shape == (6,)


def tiny_dataset(name: str, channels: int, size: int = 64, n: int = 24, classes: int = 3) -> Dataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return Dataset(name, "train", images, torch.arange(n) % classes, tuple(DATASETS[name].classes)[:classes])


@pytest.mark.parametrize("arch", CONV)
@pytest.mark.parametrize("channels", [1, 3])
def test_64_px_trains_saves_and_samples(arch, channels, tmp_path):
    data = tiny_dataset("mnist" if channels == 1 else "cifar10", channels)
    cfg = TrainConfig(dataset=data.name, arch=arch, loss=networks.ARCHITECTURES[arch].loss, g_width=8, d_width=8,
                      z_dim=16, batch_size=8, steps=3, log_every=1, checkpoint_every=3)
    run = tmp_path / "run"
    trainer = fit(cfg, data, run, torch.device("cpu"), progress_bar=False)
    assert trainer.progress.step == 3
    sampler = cgan.load(run)  # checkpoint.json, header check on the meta device, then the weights
    assert (sampler.meta["image"]["size"], sampler.meta["image"]["channels"]) == (64, channels)
    images, labels = sampler.sample([0, 2], 3, seed=5)
    assert images.shape == ((6, 64, 64) if channels == 1 else (6, 64, 64, 3)) and images.dtype.name == "uint8"
    assert labels.tolist() == [0, 0, 0, 2, 2, 2]
    again, _ = cgan.load(run).sample([2], 3, seed=5)
    assert (again == images[3:]).all()  # reloaded: the same images


def test_a_64_px_checkpoint_from_before_the_extra_stage_is_refused_clearly(tmp_path, monkeypatch):
    data = tiny_dataset("mnist", 1)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=8, steps=1)
    from cgan.training import Trainer

    with monkeypatch.context() as m:  # the networks as they were: two stages at every size
        m.setattr(networks, "conv_stages", lambda size: 2)
        old = Trainer(cfg, data, torch.device("cpu"))
    assert old.G.extra is None and old.G.base == 16
    folder = write_folder(tmp_path / "old64", old.meta("export"), {GENERATOR_FILE: old.G_ema.state_dict()})
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        cgan.load(folder)


def test_the_studio_caps_a_grid_of_64_px_images(tmp_path):
    from cgan.studio import ALL_CLASSES, MAX_GRID, InputError, Studio, grid_limit

    assert grid_limit(28) == grid_limit(32) == MAX_GRID * MAX_GRID  # unchanged below 64 px
    limit = grid_limit(64)
    assert 25 <= limit < 100
    data = tiny_dataset("cifar10", 3)
    cfg = TrainConfig(dataset="cifar10", g_width=8, d_width=8, z_dim=16, batch_size=8, steps=1)
    from cgan.training import Trainer

    trainer = Trainer(cfg, data, torch.device("cpu"))
    root = tmp_path / "checkpoints"
    write_folder(root / "big", trainer.meta("export"), {GENERATOR_FILE: trainer.G_ema.state_dict()})
    studio = Studio(root)
    assert studio.describe()["big"]["image_size"] == 64
    side = int(limit ** 0.5)
    image, caption = studio.generate("big", "airplane", 3, side, side, 1.0, 1)
    assert image.shape == (side * 66 + 2, side * 66 + 2, 3)
    assert studio.cell_at("big", "airplane", 3, side, side, 1.0, 1, 2 + 66 + 5, 2 + 5) == \
        {"class": "airplane", "index": 1, "seed": 3, "truncation": 1.0}
    for call in (lambda: studio.generate("big", "airplane", 3, 10, 10, 1.0, 3),
                 lambda: studio.cell_at("big", "airplane", 3, 10, 10, 1.0, 3, 5, 5)):
        with pytest.raises(InputError) as e:
            call()
        text = str(e.value)
        assert f"at most {limit}" in text and "fewer rows or columns" in text
        assert f"10 rows and {limit // 10} columns" in text and f"{side} rows and {limit // side} columns" in text
    # an overview (one row per class) is held to the request budget only, as at every size
    image, _ = studio.generate("big", ALL_CLASSES, 3, 4, 10, 1.0, 1)
    assert image.shape[0] == 3 * 66 + 2
