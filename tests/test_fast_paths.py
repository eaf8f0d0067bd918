"""The fast training paths give the same results as the plain ones."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cgan.config import TrainConfig
from cgan.data import load_dataset
from cgan.training import Trainer

CPU = torch.device("cpu")


def test_device_and_dataloader_paths_draw_the_same_batches(mnist_dir):
    ds = load_dataset("mnist", "train", mnist_dir)  # 96 images: 6 batches of 16 per epoch
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, seed=3)
    fast, naive = Trainer(cfg, ds, CPU), Trainer(replace(cfg, loader="dataloader"), ds, CPU)
    seen = []
    for _ in range(14):  # crosses two epoch boundaries
        (xa, ya), (xb, yb) = fast.next_batch(), naive.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        seen.append(ya)
    assert fast.progress.epoch == 2 and fast.progress.batch == 2
    # every image exactly once per epoch, in a new order each epoch
    first = torch.cat([fast.batches.epoch(0).flatten()])
    assert sorted(first.tolist()) == list(range(96))
    assert not torch.equal(fast.batches.epoch(0), fast.batches.epoch(1))


def test_a_full_iteration_is_identical_on_both_paths(mnist_dir):
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, augment="translation,cutout")
    a, b = Trainer(cfg, ds, CPU), Trainer(replace(cfg, loader="dataloader"), ds, CPU)
    for _ in range(3):
        assert torch.equal(a.iteration(), b.iteration())


def test_compiled_steps_match_eager(mnist_dir):
    """torch.compile (inductor, C++ on CPU) of a tiny DCGAN: a few steps stay within float tolerance.
    (Not the MLP: compiled dropout draws its masks from another generator, so it differs by design.)"""
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(arch="dcgan", loss="bce", g_width=4, d_width=4, z_dim=8, batch_size=16)
    eager, compiled = Trainer(cfg, ds, CPU), Trainer(replace(cfg, compile=True), ds, CPU)
    for _ in range(3):
        le, lc = eager.iteration(), compiled.iteration()
        torch.testing.assert_close(lc, le, rtol=1e-4, atol=1e-5)
    for (name, pe), pc in zip(eager.G.state_dict().items(), compiled.G.state_dict().values()):
        torch.testing.assert_close(pc, pe, rtol=1e-4, atol=1e-5, msg=name)


def test_channels_last_and_bf16_train_close_to_fp32_and_resume_bitwise(tmp_path, mnist_dir):
    """channels_last only changes the memory layout: the same losses as NCHW up to float rounding; with
    bf16 autocast too, close; and a channels_last + bf16 run resumed from its checkpoint is bitwise the
    run that never stopped."""
    import json

    from safetensors.torch import load_file

    from cgan.training_cli import main as train

    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, seed=3, augment="translation,cutout")
    plain, nhwc = Trainer(cfg, ds, CPU), Trainer(replace(cfg, channels_last=True), ds, CPU)
    assert nhwc.G.conv0.weight.is_contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        a, b = plain.iteration(), nhwc.iteration()
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), (a, b)
    fast = Trainer(replace(cfg, channels_last=True, amp=True), ds, CPU)
    plain = Trainer(cfg, ds, CPU)
    a, b = plain.iteration(), fast.iteration()
    assert torch.allclose(a, b, rtol=0.1, atol=0.05), (a, b)

    base = ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--g-width", "8", "--d-width", "8", "--z-dim", "16",
            "--batch-size", "16", "--no-progress", "--checkpoint-every", "2", "--amp", "--channels-last"]
    assert train([*base, "--steps", "4", "--out", str(tmp_path / "straight")]) == 0
    assert train([*base, "--steps", "2", "--out", str(tmp_path / "resumed")]) == 0
    assert train(["--resume", str(tmp_path / "resumed"), "--steps", "4", "--data-dir", str(mnist_dir), "--no-progress"]) == 0
    meta = json.loads((tmp_path / "resumed" / "checkpoints" / "step-0000004" / "checkpoint.json").read_text())
    assert meta["config"]["channels_last"] is True and meta["config"]["amp"] is True
    for name in ("training_state.safetensors", "generator.safetensors"):
        x = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000004" / name))
        y = load_file(str(tmp_path / "resumed" / "checkpoints" / "step-0000004" / name))
        assert all(torch.equal(x[k], y[k]) for k in x), name


def test_the_benchmark_times_the_naive_baseline_and_the_precision_variants(tmp_path, capsys):
    """`python -m cgan.bench` on synthetic data, tiny: every row it promises is there and positive."""
    import json

    from cgan.bench import main as bench

    out = tmp_path / "bench.json"
    assert bench(["--device", "cpu", "--archs", "dcgan,mlp", "--loaders", "device", "--steps", "2", "--warmup", "1",
                  "--precision-variants", "--rounds", "1", "--kernel-profile", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {r["arch"]: r for r in report["results"]}
    assert {"dcgan", "mlp", "tutorial-dcgan", "tutorial-mlp", "tutorial-mlp-eager"} <= set(rows)
    assert all(r["images_per_s"] > 0 for r in report["results"])
    assert rows["dcgan"]["gflop_per_iteration"] > 0 and rows["dcgan"]["tflop_per_s"] > 0
    profiled = report["kernel_profile"]  # the first arch's operators: convolutions among them, timed
    assert profiled["arch"] == "dcgan" and profiled["per_iteration"] > profiled["matmul_conv"]["per_iteration"] > 0
    assert 0 < profiled["matmul_conv"]["ms_per_iteration"] < profiled["ms_per_iteration"]
    assert any("convolution" in t["name"] for t in profiled["top"])
    assert [v["variant"] for v in report["precision_variants"]] == ["fp32", "bf16", "channels_last",
                                                                     "bf16+channels_last"]
    assert "naive baseline" in capsys.readouterr().out


def test_the_time_to_quality_batch_sweep_parses_batches_and_raises_the_rates_by_its_rule(capsys):
    from cgan.bench import TTQ_BASE_BATCH, main as bench, scaled_rates
    from cgan.config import TrainConfig

    cfg = TrainConfig(lr_g=2e-4, lr_d=1e-4)
    assert TTQ_BASE_BATCH == 128
    assert scaled_rates(cfg, 512, "sqrt") == {"lr_g": 4e-4, "lr_d": 2e-4}
    assert scaled_rates(cfg, 512, "linear") == {"lr_g": 8e-4, "lr_d": 4e-4}
    assert scaled_rates(cfg, 512, "none") == {"lr_g": 2e-4, "lr_d": 1e-4}
    assert scaled_rates(cfg, 128, "sqrt") == {"lr_g": 2e-4, "lr_d": 1e-4}
    for bad in ("128,x", "0", "128,,512"):
        with pytest.raises(SystemExit):
            bench(["--time-to-quality", "--ttq-batch-size", bad])
        assert "batch sizes" in capsys.readouterr().err


def test_the_benchmark_names_a_missing_data_folder_or_evaluator_without_a_traceback(tmp_path, capsys, mnist_dir):
    # the GPU speed script runs it unattended on a lent machine: its log must say what was missing
    from cgan.bench import main as bench

    assert bench(["--device", "cpu", "--skip-throughput", "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "does not exist" in err and "Traceback" not in err
    assert bench(["--device", "cpu", "--skip-throughput", "--time-to-quality", "--data-dir", str(mnist_dir),
                  "--split", "test", "--evaluator", str(tmp_path / "no-evaluator")]) == 2
    assert "no-evaluator" in capsys.readouterr().err


def test_speed_defaults_follow_the_device_and_the_architecture():
    from cgan.networks import speed_defaults

    fast = {"amp": True, "channels_last": True, "compile": False, "compile_mode": "default", "cuda_graph": False}
    fp32 = {"amp": False, "channels_last": False, "compile": False, "compile_mode": "default", "cuda_graph": False}
    assert speed_defaults("sngan", "cpu", native_bf16=True) == fast
    assert speed_defaults("dcgan", "cpu", native_bf16=True) == fast
    assert speed_defaults("mlp", "cpu", native_bf16=True) == fp32     # not measured faster: stays fp32
    assert speed_defaults("sngan", "cpu", native_bf16=False) == fp32  # emulated bf16 would be slower
    assert speed_defaults("sngan", "mps", native_bf16=False) == fp32
    graph = {"amp": True, "channels_last": False, "compile": False, "compile_mode": "reduce-overhead",
             "cuda_graph": True}
    compiled = {**graph, "compile": True, "cuda_graph": False}
    assert speed_defaults("sngan", "cuda", native_bf16=True) == graph  # measured the faster on an H200
    assert speed_defaults("sngan", "cuda", native_bf16=True, graph_possible=False) == compiled
    assert speed_defaults("sngan", "cuda", native_bf16=True, cuda_graph=False) == compiled
    assert speed_defaults("sngan", "cpu", native_bf16=True, cuda_graph=None) == fast  # never a graph off CUDA


@pytest.mark.parametrize("argv, graph, compiled", [
    ([], True, False), (["--cuda-graph"], True, False),
    (["--loader", "dataloader"], False, True), ("torchrun", False, True),
    (["--compile"], False, True), (["--compile-mode", "default"], False, True), (["--no-cuda-graph"], False, True),
    (["--no-compile"], False, False),  # eager, for debugging
])
def test_a_cuda_run_captures_its_iteration_as_a_graph_unless_something_rules_it_out(argv, graph, compiled):
    # On one GPU with the device loader the captured iteration is the default (H200: 34,866 img/s after 0.3 s
    # vs torch.compile's 28,495 after 31 s); torchrun, a DataLoader or an explicit compile option keep compile.
    from cgan.training_cli import build_parser, config_from_args

    args = build_parser().parse_args(["--dataset", "mnist"] + ([] if argv == "torchrun" else argv))
    args.device_type, args.native_bf16, args.distributed = "cuda", True, argv == "torchrun"
    cfg = config_from_args(args, num_images=10_000)
    cfg.validate()
    assert (cfg.cuda_graph, cfg.compile, cfg.amp) == (graph, compiled, True)


def test_train_py_uses_bf16_by_default_where_the_cpu_has_it_and_no_amp_opts_out(tmp_path, mnist_dir, capsys):
    import json

    from cgan.distributed import cpu_name, native_bf16
    from cgan.training_cli import main
    from conftest import TINY

    native = native_bf16(torch.device("cpu"))

    def config(name, *extra):
        assert main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "1", "--out",
                     str(tmp_path / name), *TINY, *extra]) == 0
        return json.loads((tmp_path / name / "run.json").read_text())["config"]

    default = config("default")
    assert (default["amp"], default["channels_last"]) == (native, native)
    # run.json names the host, so throughput and the precision chosen can be read against the CPU they ran on
    device = json.loads((tmp_path / "default" / "run.json").read_text())["invocations"][-1]["device"]
    assert device.startswith(f"CPU: {cpu_name()} (") and device.endswith("native bf16)")
    assert ("no native bf16" in device) is (not native)
    if native:
        assert "this CPU computes bf16 natively (--no-amp for fp32)" in capsys.readouterr().err
    opted_out = config("fp32", "--no-amp")
    assert (opted_out["amp"], opted_out["channels_last"]) == (False, False)
    mlp = config("mlp", "--arch", "mlp")
    assert (mlp["amp"], mlp["channels_last"]) == (False, False)
    # and a resumed run keeps what it started with, whatever this machine would choose now
    assert main(["--resume", str(tmp_path / "fp32"), "--steps", "2", "--data-dir", str(mnist_dir), "--no-progress"]) == 0
    meta = json.loads((tmp_path / "fp32" / "checkpoints" / "step-0000002" / "checkpoint.json").read_text())
    assert meta["config"]["amp"] is False


def test_the_projection_d_scores_wrong_labels_from_the_same_features():
    """D(x, y, y_more): the matching-aware term's wrong labels are scored from the features of the real images
    already computed, identical to a second call (eval mode: no power-iteration update between calls); at 64
    px too, with class weights as well as indices."""
    from cgan.networks import build_discriminator

    torch.manual_seed(0)
    for size in (28, 64):
        D = build_discriminator("sngan", 5, 1, size, 8).eval()
        x, y = torch.randn(6, 1, size, size), torch.randint(5, (6,))
        for more in (torch.randint(5, (4,)), torch.softmax(torch.randn(4, 5), dim=1)):
            with torch.no_grad():
                logits, more_logits = D(x, y, more)
                assert torch.equal(logits, D(x, y))
                torch.testing.assert_close(more_logits, D(x[:4], more), rtol=1e-6, atol=1e-6)


def test_a_matching_aware_sngan_step_runs_the_convolutions_once_and_learns_the_term(mnist_dir):
    """With --mismatch-weight, a D step of the default arch passes real and fake through the convolutions
    once (not twice as before), and the wrong-label term still trains D: the same step without it ends with
    other weights."""
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, seed=3, mismatch_weight=0.5)
    matching, plain = Trainer(cfg, ds, CPU), Trainer(replace(cfg, mismatch_weight=0.0), ds, CPU)
    passes = []
    matching.D.features.register_forward_hook(lambda m, i, o: passes.append(len(i[0])))
    matching.iteration()
    plain.iteration()
    assert passes == [32, 16]  # D step: real + fake together; G step: fake
    assert not torch.equal(matching.D.embed.parametrizations.weight.original,
                           plain.D.embed.parametrizations.weight.original)
    assert torch.isfinite(torch.stack([p.sum() for p in matching.D.parameters()])).all()


def test_the_hardest_wrong_label_is_the_one_d_scores_highest_and_never_the_right_one():
    """hardest_wrong=n pairs each of the first n images with the wrong label D itself scores highest: the same
    label a brute-force search over D(x, c) for every wrong c finds, and the same logit."""
    from cgan.networks import build_discriminator

    torch.manual_seed(1)
    K = 7
    for size in (28, 64):
        D = build_discriminator("sngan", K, 1, size, 8).eval()
        x, y = torch.randn(10, 1, size, size), torch.randint(K, (10,))
        with torch.no_grad():
            logits, hard_logits = D(x, y, hardest_wrong=6)
            assert torch.equal(logits, D(x, y)) and hard_logits.shape == (6,)
            every = torch.stack([D(x[:6], torch.full((6,), c)) for c in range(K)], dim=1)  # (6, K)
            every[torch.arange(6), y[:6]] = float("-inf")
            torch.testing.assert_close(hard_logits, every.max(dim=1).values, rtol=1e-5, atol=1e-5)
            h = D.features(x if D.stem is None else D.stem(x)).sum(dim=(2, 3))
            chosen = D.hardest_wrong_labels(h[:6], y[:6])
            assert torch.equal(chosen, every.argmax(dim=1)) and not (chosen == y[:6]).any()


def test_hardest_wrong_labels_train_d_in_one_pass_and_differ_from_uniform_ones(mnist_dir):
    """--mismatch-labels hardest: still one pass of real + fake through the convolutions per D step, and a
    different wrong-label term from the uniform one (the same step ends with other D weights)."""
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, seed=3, mismatch_weight=0.5)
    hardest, uniform = Trainer(replace(cfg, mismatch_labels="hardest"), ds, CPU), Trainer(cfg, ds, CPU)
    passes = []
    hardest.D.features.register_forward_hook(lambda m, i, o: passes.append(len(i[0])))
    out = hardest.iteration()
    uniform.iteration()
    assert passes == [32, 16] and torch.isfinite(out).all()
    assert not torch.equal(hardest.D.embed.parametrizations.weight.original,
                           uniform.D.embed.parametrizations.weight.original)


@pytest.mark.parametrize("arch, extra", [
    ("dcgan", {}),
    ("sngan", {"augment": "translation,cutout", "mode_seeking": 0.01, "d_minibatch_std": 4, "d_steps": 2}),
])
def test_the_benchmarks_flop_count_is_exact_at_a_batch_it_did_not_count(arch, extra):
    """The benchmark counts an iteration's FLOP at batches 4 and 8 and extends the line to the batch it
    times; a direct count at batch 12 (bf16 + channels_last asked for: the count ignores both) must agree."""
    from torch.utils.flop_counter import FlopCounterMode

    from cgan.bench import iteration_gflop, synthetic_dataset
    from cgan.networks import recipe

    data = synthetic_dataset(n=200)
    cfg = replace(replace(TrainConfig(), **recipe(arch, len(data))), batch_size=12, amp=True, channels_last=True,
                  **extra)
    counter = FlopCounterMode(display=False)
    trainer = Trainer(replace(cfg, amp=False, channels_last=False), data, torch.device("cpu"))
    with counter:
        trainer.iteration()
    assert counter.get_total_flops() > 0
    assert iteration_gflop(cfg, data) == pytest.approx(counter.get_total_flops() / 1e9, rel=1e-9)
