"""Generators and discriminators, one pair per architecture.

Every generator takes ``(z, y)`` and every discriminator ``(x, y)``, where ``y`` is either class indices
(int64, shape (B,)) or class weights (float, shape (B, K)). Weights let a caller blend classes (the
app's class morph); indices are turned into one-hot weights. Internally every label path therefore
starts from a (B, K) float matrix, and "label embedding" layers are linear maps of it, which is exactly
an embedding table for one-hot input.

Images are in [-1, 1], shape (B, C, H, W), C = 1 or 3, H = W divisible by 4 (28 for the MNIST family, 32
for CIFAR, 64 for a folder of your own images). The convolutional networks (sngan, dcgan) resample by 2 per
stage: two stages below 64 px (a 28 px generator starts from 7x7), three from 64 px on when the size is
divisible by 8 (a 64 px generator starts from 8x8); see ``conv_stages``. The third stage is made of extra,
separately named modules (``extra`` in the generators, ``stem`` in the discriminators) that exist only at
those sizes, so every network below 64 px has exactly the parameters, names and arithmetic it always had
and checkpoints trained before 64 px support load bit for bit. The MLP networks work at any size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm


def class_weights(y: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    if y.dtype.is_floating_point:
        return y.to(dtype)
    # Not F.one_hot: on CUDA it checks the label range, which forces a device sync every call.
    return (y[:, None] == torch.arange(num_classes, device=y.device)).to(dtype)


EXTRA_STAGE_MIN_SIZE = 64             # from this image size on, the conv networks have a third stage


def conv_stages(size: int) -> int:
    """How many factor-2 resampling stages the conv generators and discriminators use for ``size`` px:
    3 from EXTRA_STAGE_MIN_SIZE px on when size is divisible by 8 (64 px: 8x8 -> 64x64), else 2 (28 px:
    7x7 -> 28x28; 32 px: 8x8 -> 32x32). The generator starts from size / 2**stages pixels."""
    return 3 if size >= EXTRA_STAGE_MIN_SIZE and size % 8 == 0 else 2


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) weights, BN gains N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- mlp (tutorial CGAN)

class MLPGenerator(nn.Module):
    """The classic CGAN generator: [z, one-hot label] -> MLP -> tanh image."""

    def __init__(self, z_dim: int, num_classes: int, channels: int, size: int, width: int = 256):
        super().__init__()
        self.num_classes, self.out_shape = num_classes, (channels, size, size)
        self.net = nn.Sequential(
            nn.Linear(z_dim + num_classes, width), nn.LeakyReLU(0.2),
            nn.Linear(width, 2 * width), nn.LeakyReLU(0.2),
            nn.Linear(2 * width, 4 * width), nn.LeakyReLU(0.2),
            nn.Linear(4 * width, channels * size * size), nn.Tanh(),
        )

    def forward(self, z, y):
        h = torch.cat([z, class_weights(y, self.num_classes, z.dtype)], dim=1)
        return self.net(h).view(-1, *self.out_shape)


class MLPDiscriminator(nn.Module):
    """[flattened image, one-hot label] -> MLP with leaky ReLU and dropout -> logit."""

    def __init__(self, num_classes: int, channels: int, size: int, width: int = 256):
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.Linear(channels * size * size + num_classes, 4 * width), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(4 * width, 2 * width), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(2 * width, width), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(width, 1),
        )

    def forward(self, x, y):
        h = torch.cat([x.flatten(1), class_weights(y, self.num_classes, x.dtype)], dim=1)
        return self.net(h).squeeze(1)


# ----------------------------------------------------------------------------- dcgan (tutorial conv CGAN)

class DCGANGenerator(nn.Module):
    """Dense -> reshape -> transposed convs with batch norm and leaky ReLU -> tanh.

    From 64 px (``conv_stages``) one more transposed conv at 2w channels (``extra``) comes first, at the
    lowest resolution: 8x8 -> 16x16, then ``up`` as below 64 px."""

    def __init__(self, z_dim: int, num_classes: int, channels: int, size: int, width: int = 64):
        super().__init__()
        stages = conv_stages(size)
        self.num_classes, self.base, self.width = num_classes, size // 2 ** stages, width
        self.fc = nn.Sequential(nn.Linear(z_dim + num_classes, 2 * width * self.base ** 2, bias=False),
                                nn.BatchNorm1d(2 * width * self.base ** 2), nn.LeakyReLU(0.2))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh(),
        )
        self.extra = nn.Sequential(
            nn.ConvTranspose2d(2 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
        ) if stages == 3 else None
        dcgan_init(self)

    def forward(self, z, y):
        h = self.fc(torch.cat([z, class_weights(y, self.num_classes, z.dtype)], dim=1))
        h = h.view(-1, 2 * self.width, self.base, self.base)
        if self.extra is not None:
            h = self.extra(h)
        return self.up(h)


class DCGANDiscriminator(nn.Module):
    """Strided convs over the image with the one-hot label broadcast as extra input channels.

    From 64 px (``conv_stages``) a strided conv to w channels (``stem``) sees image and label planes first,
    at full resolution (64x64 -> 32x32), and ``net`` continues from its w channels."""

    def __init__(self, num_classes: int, channels: int, size: int, width: int = 64):
        super().__init__()
        stages = conv_stages(size)
        self.num_classes = num_classes
        inputs = channels + num_classes if stages == 2 else width
        self.net = nn.Sequential(
            nn.Conv2d(inputs, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * (size // 2 ** stages) ** 2, 1),
        )
        self.stem = nn.Sequential(nn.Conv2d(channels + num_classes, width, 4, 2, 1), nn.LeakyReLU(0.2)) \
            if stages == 3 else None
        dcgan_init(self)

    def forward(self, x, y):
        onehot = class_weights(y, self.num_classes, x.dtype)
        planes = onehot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        h = torch.cat([x, planes], dim=1)
        if self.stem is not None:
            h = self.stem(h)
        return self.net(h).squeeze(1)


# ----------------------------------------------------------------------------- sngan (the default)

class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias come from the class (de Vries et al. 2017; Miyato & Koyama 2018)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(num_classes, channels, bias=False)
        self.bias = nn.Linear(num_classes, channels, bias=False)
        nn.init.zeros_(self.gain.weight)  # starts as plain batch norm with gain 1, bias 0
        nn.init.zeros_(self.bias.weight)
        self.register_buffer("folded_inv_std", None, persistent=False)

    @torch.no_grad()
    def fold(self) -> "ConditionalBatchNorm2d":
        """For inference (``fold_for_inference``): with the running statistics fixed, the normalisation,
        gain and bias are one multiply-add per element with a per-image, per-channel scale and shift (one pass
        instead of three). Equal up to float rounding."""
        self.folded_inv_std = torch.rsqrt(self.bn.running_var + self.bn.eps)
        return self

    def train(self, mode: bool = True):
        if mode:
            self.folded_inv_std = None  # stale as soon as the statistics move
        return super().train(mode)

    def forward(self, x, c):
        gain = 1.0 + self.gain(c)
        if self.folded_inv_std is not None:
            scale = gain * self.folded_inv_std
            shift = self.bias(c) - self.bn.running_mean * scale
            return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])
        return self.bn(x) * gain[:, :, None, None] + self.bias(c)[:, :, None, None]


class UpsampleConv2d(nn.Conv2d):
    """A 3x3 convolution (padding 1) of its input upsampled 2x by nearest neighbour: the generator's upsampling
    step. Same parameters and names as the ``nn.Conv2d`` it is, so checkpoints load as before.

    ``fold()``, for inference (``fold_for_inference``), precomputes the transposed convolution (kernel 4,
    stride 2, padding 1) that computes the same thing in one pass: each output pixel reads a 2x2 window of the
    input, so the 3x3 taps that land on the same input pixel are summed once, leaving 4/9 of the multiply-adds
    and no upsampled tensor. Equal up to float rounding. ``train()`` drops the fold, which would go stale as
    the weights change."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, 1, 1)
        self.register_buffer("folded_weight", None, persistent=False)

    @torch.no_grad()
    def fold(self) -> "UpsampleConv2d":
        def taps(w, dim):  # 3x3 taps reading offsets -1, 0, 1 -> transposed taps t writing output 2i - 1 + t
            before, centre, after = w.unbind(dim)
            return torch.stack([after, centre + after, before + centre, before], dim)
        self.folded_weight = taps(taps(self.weight, 2), 3).transpose(0, 1).contiguous()
        return self

    def train(self, mode: bool = True):
        if mode:
            self.folded_weight = None
        return super().train(mode)

    def forward(self, x):
        if self.folded_weight is not None:
            return F.conv_transpose2d(x, self.folded_weight, self.bias, stride=2, padding=1)
        return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))


def fold_for_inference(generator: nn.Module) -> nn.Module:
    """The generator, in eval mode, with its upsampling convolutions and conditional batch norms folded into
    fewer, cheaper operations that compute the same function (``UpsampleConv2d.fold``,
    ``ConditionalBatchNorm2d.fold``); ``train()`` undoes it. ``cgan.load`` serves every generator this way.
    Measured on the shipped width-64 generators (2 CPU cores, fp32, 2026-12-05): the studio's 10x10 grid about
    1.5x faster (p50 188-217 ms to 130-141 ms); over 100 images of every class, 8 to 18 uint8 pixels in a
    million differ, by one grey level. Training never folds, so its arithmetic is what it was."""
    generator.eval()
    for m in generator.modules():
        if isinstance(m, (UpsampleConv2d, ConditionalBatchNorm2d)):
            m.fold()
    return generator


class SNGANUpStage(nn.Module):
    """Class-conditional BN, ReLU, nearest upsampling by 2, 3x3 conv: the 64 px generator's extra stage."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int):
        super().__init__()
        self.bn = ConditionalBatchNorm2d(in_channels, num_classes)
        self.conv = UpsampleConv2d(in_channels, out_channels)

    def forward(self, h, c):
        return self.conv(F.relu(self.bn(h, c)))


class SNGANGenerator(nn.Module):
    """z -> dense 4w x (S/4)^2 -> conv -> [upsample, conv] x 2 -> conv -> tanh, class-conditional BN.

    Nearest upsampling + 3x3 convs instead of transposed convs (no checkerboard artefacts; for inference each
    pair is folded into the one transposed conv that computes the same function: ``UpsampleConv2d``). Deliberately
    small (width 32: about 36 MMAC per 28x28 image) so a 10x10 grid renders in tens of ms on 2 CPU cores.
    From 64 px (``conv_stages``) the dense layer makes (S/8)^2 and one more [upsample, conv] at w channels
    (``extra``) comes last, at the highest resolution, where it is cheapest (width 32: about 90 MMAC per
    64x64 image).
    """

    def __init__(self, z_dim: int, num_classes: int, channels: int, size: int, width: int = 32):
        super().__init__()
        stages = conv_stages(size)
        self.num_classes, self.base, self.width = num_classes, size // 2 ** stages, width
        c4, c2, c1 = 4 * width, 2 * width, width
        self.fc = nn.Linear(z_dim, c4 * self.base ** 2)
        self.bn0 = ConditionalBatchNorm2d(c4, num_classes)
        self.conv0 = nn.Conv2d(c4, c4, 3, 1, 1)
        self.bn1 = ConditionalBatchNorm2d(c4, num_classes)
        self.conv1 = UpsampleConv2d(c4, c2)
        self.bn2 = ConditionalBatchNorm2d(c2, num_classes)
        self.conv2 = UpsampleConv2d(c2, c1)
        self.bn3 = ConditionalBatchNorm2d(c1, num_classes)
        self.out = nn.Conv2d(c1, channels, 3, 1, 1)
        self.extra = SNGANUpStage(c1, c1, num_classes) if stages == 3 else None

    def forward(self, z, y):
        c = class_weights(y, self.num_classes, z.dtype)
        h = self.fc(z).view(-1, 4 * self.width, self.base, self.base)
        h = self.conv0(F.relu(self.bn0(h, c)))
        h = self.conv1(F.relu(self.bn1(h, c)))
        h = self.conv2(F.relu(self.bn2(h, c)))
        if self.extra is not None:
            h = self.extra(h, c)
        h = F.relu(self.bn3(h, c))
        return torch.tanh(self.out(h))


def minibatch_std(h: torch.Tensor, group: int) -> torch.Tensor:
    """h (N, C, H, W) with one more channel: for each group of ``group`` consecutive images, their standard
    deviation per feature and position, averaged (ProGAN's minibatch standard deviation, Karras et al. 2018).
    D then sees how varied a few images are together, so a G that draws too few kinds of image per class can
    be told from real data. Groups are consecutive, not strided as in StyleGAN, so that a batch of real images
    followed by generated ones (the D step scores both in one pass) never mixes the two in a group."""
    n, c, height, width = h.shape
    g = min(group, n)
    if n % g:
        raise ValueError(f"the minibatch standard deviation takes groups of {g} images: a batch of {n} does "
                         f"not divide into them (use a batch size divisible by {g})")
    groups = h.float().reshape(n // g, g, c, height, width)
    std = (groups.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n // g,)
    std = std.to(h.dtype).repeat_interleave(g).reshape(n, 1, 1, 1).expand(n, 1, height, width)
    return torch.cat([h, std], dim=1)


class SNGANDiscriminator(nn.Module):
    """Spectrally normalised convs, global sum pooling and a projection head (Miyato & Koyama 2018):
    logit = w . h + <embed(y), h>, so the label is compared with what the image looks like.

    From 64 px (``conv_stages``) a strided conv to w channels (``stem``) comes first, at full resolution
    (64x64 -> 32x32), and ``features`` continues from its w channels. With ``minibatch_std`` = g, the last
    conv (``std_features``) also reads the minibatch standard deviation of groups of g images."""

    def __init__(self, num_classes: int, channels: int, size: int, width: int = 64, minibatch_std: int = 0):
        super().__init__()
        stages = conv_stages(size)
        self.num_classes = num_classes
        self.minibatch_std = minibatch_std
        c1, c2, c4 = width, 2 * width, 4 * width
        act = nn.LeakyReLU(0.2)
        first = [
            spectral_norm(nn.Conv2d(channels if stages == 2 else c1, c1, 3, 1, 1)), act,
            spectral_norm(nn.Conv2d(c1, c2, 4, 2, 1)), act,
            spectral_norm(nn.Conv2d(c2, c2, 3, 1, 1)), act,
            spectral_norm(nn.Conv2d(c2, c4, 4, 2, 1)), act,
        ]
        # (built in this order, so a seed gives the default D the initial weights it always had)
        last = [spectral_norm(nn.Conv2d(c4 + (1 if minibatch_std else 0), c4, 3, 1, 1)), act]
        self.features = nn.Sequential(*first, *([] if minibatch_std else last))
        # (a separate module, so the default D's weight names, and every checkpoint's, stay as they were)
        self.std_features = nn.Sequential(*last) if minibatch_std else None
        self.linear = spectral_norm(nn.Linear(c4, 1))
        self.embed = spectral_norm(nn.Linear(num_classes, c4, bias=False))
        self.stem = nn.Sequential(spectral_norm(nn.Conv2d(channels, c1, 4, 2, 1)), act) if stages == 3 else None

    def forward(self, x, y, y_more=None, hardest_wrong=0):
        """Logits of (x, y); with ``y_more``, also the logits of the first len(y_more) images paired with
        those labels, from the same features: the matching-aware term's "real image, wrong label" then costs
        one embedding product instead of a second pass through the convolutions. With ``hardest_wrong`` = n
        instead, the first n images are paired with the wrong label this D scores highest for each of them:
        the class it takes the image for after its own (a hard negative)."""
        h = self.features(x if self.stem is None else self.stem(x))
        if self.std_features is not None:
            h = self.std_features(minibatch_std(h, self.minibatch_std))
        h = h.sum(dim=(2, 3))
        unconditional = self.linear(h).squeeze(1)
        logits = unconditional + self._projection(h, y)
        if hardest_wrong:
            y_more = self.hardest_wrong_labels(h[:hardest_wrong], y[:hardest_wrong])
        if y_more is None:
            return logits
        n = len(y_more)
        return logits, unconditional[:n] + self._projection(h[:n], y_more)

    def _projection(self, h, y):
        return (self.embed(class_weights(y, self.num_classes, h.dtype)) * h).sum(dim=1)

    @torch.no_grad()
    def hardest_wrong_labels(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """For features h of images labelled y (indices), the wrong label with the highest projection score.
        The unconditional part of the logit is the same for every label, so the projection decides."""
        # (reading the weight runs one more power iteration of its spectral norm: a closer estimate, harmless,
        # and part of every measured run with this option)
        scores = h @ self.embed.weight.to(h.dtype)  # (n, num_classes): <embed(c), h> for every class c
        right = class_weights(y, self.num_classes, torch.bool)
        return scores.masked_fill(right, float("-inf")).argmax(dim=1)


@dataclass(frozen=True)
class Architecture:
    """Everything about one architecture: adding an architecture is one entry in ARCHITECTURES."""

    generator: type[nn.Module]        # (z_dim, num_classes, channels, size, width)
    discriminator: type[nn.Module]    # (num_classes, channels, size, width)
    g_width: int                      # default widths
    d_width: int
    loss: str                         # default loss: "hinge" or "bce"
    auto_augment: bool                # whether --augment auto turns DiffAugment on for small datasets
    description: str
    cpu_bf16: bool = False            # bf16 + channels_last by default on CPUs with native bf16 (measured faster,
                                      # same quality; see speed_defaults)
    scores_more_labels: bool = False  # D(x, y, y_more) also scores other labels from the same features
    minibatch_std: bool = False       # D can read the minibatch standard deviation (--d-minibatch-std)


AUTO_AUGMENT_MAX_IMAGES = 20_000      # "small": DiffAugment by default only where data is scarce

ARCHITECTURES = {
    "sngan": Architecture(SNGANGenerator, SNGANDiscriminator, 32, 64, "hinge", True,
                          "default: conditional-BN conv G, spectral-norm projection D", cpu_bf16=True,
                          scores_more_labels=True, minibatch_std=True),
    "dcgan": Architecture(DCGANGenerator, DCGANDiscriminator, 64, 64, "bce", False,
                          "tutorial conv CGAN: transposed convs + BN; labels as extra D input channels",
                          cpu_bf16=True),
    "mlp": Architecture(MLPGenerator, MLPDiscriminator, 256, 256, "bce", False,
                        "tutorial MLP CGAN: [z, one-hot] MLPs with leaky ReLU and dropout"),
}


def build_generator(arch: str, z_dim: int, num_classes: int, channels: int, size: int, width: int) -> nn.Module:
    return ARCHITECTURES[arch].generator(z_dim, num_classes, channels, size, width)


def build_discriminator(arch: str, num_classes: int, channels: int, size: int, width: int,
                        minibatch_std: int = 0) -> nn.Module:
    more = {"minibatch_std": minibatch_std} if minibatch_std else {}  # (only where the arch has it: validated)
    return ARCHITECTURES[arch].discriminator(num_classes, channels, size, width, **more)


def default_augment(arch: str, num_images: int) -> str:
    """The DiffAugment policy that --augment auto means for this architecture and dataset size."""
    return "translation,cutout" if ARCHITECTURES[arch].auto_augment and num_images < AUTO_AUGMENT_MAX_IMAGES else ""


def recipe(arch: str, num_images: int) -> dict:
    """The TrainConfig fields an architecture's defaults fill in, for a dataset of ``num_images``."""
    a = ARCHITECTURES[arch]
    return {"arch": arch, "g_width": a.g_width, "d_width": a.d_width, "loss": a.loss,
            "augment": default_augment(arch, num_images)}


def cuda_graph_possible(loader: str, compile: bool | None, compile_mode: str | None, distributed: bool = False) -> bool:
    """Whether a run may capture its iteration as a CUDA graph by default: one process, batches gathered on the
    device, and no torch.compile asked for (--compile or --compile-mode). train.py and cgan.bench share it."""
    return loader == "device" and not distributed and compile is None and compile_mode is None


def speed_defaults(arch: str, device_type: str, native_bf16: bool, cuda_graph: bool | None = None,
                   graph_possible: bool = True) -> dict:
    """The TrainConfig speed fields (amp, channels_last, compile, compile_mode, cuda_graph) a run gets unless
    told otherwise. CUDA: bf16 autocast, and the whole iteration captured as one CUDA graph wherever a graph
    can work (``graph_possible``, from cuda_graph_possible): on an H200
    34,866 img/s at batch 256 after a 0.3 s warm-up, against torch.compile reduce-overhead's 28,495 after 31 s,
    and MNIST quality after 11.1 s of training (README, Speed); elsewhere torch.compile with CUDA graphs
    (reduce-overhead: 3x the default mode on an H100). A CPU that computes bf16 natively (AVX-512 BF16, AMX):
    bf16 autocast with channels_last for the conv architectures: 2.13x (sngan) and 1.50x (dcgan) fp32's
    images/s on 2 cores, with the same quality at equal steps. Any other CPU: fp32, where emulated bf16 would
    be slower. ``cuda_graph`` True or False (the command line's --cuda-graph / --no-cuda-graph) decides it."""
    cuda = device_type == "cuda"
    cpu_fast = device_type == "cpu" and native_bf16 and ARCHITECTURES[arch].cpu_bf16
    graph = cuda and graph_possible if cuda_graph is None else cuda_graph
    return {"amp": cuda or cpu_fast, "channels_last": cpu_fast, "compile": cuda and not graph,
            "compile_mode": "reduce-overhead" if cuda else "default", "cuda_graph": graph}


def parameter_count(arch: str, z_dim: int, num_classes: int, channels: int, size: int, g_width: int,
                    d_width: int, minibatch_std: int = 0) -> tuple[int, int]:
    """(generator, discriminator) parameter counts, from networks built on the meta device (no memory)."""
    with torch.device("meta"):
        g = build_generator(arch, z_dim, num_classes, channels, size, g_width)
        d = build_discriminator(arch, num_classes, channels, size, d_width, minibatch_std)
    return sum(p.numel() for p in g.parameters()), sum(p.numel() for p in d.parameters())
