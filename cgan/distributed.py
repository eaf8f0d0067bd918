"""Multi-process training through torchrun: process-group set-up read from torchrun's environment."""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def real_core_count() -> int:
    """CPU cores this process may run on (cgroup/affinity aware), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_torch(threads: int | None = None) -> int:
    """torch's CPU thread pool: ``threads``, or every core this process may use. Process-wide: called by
    app.py and train.py, never by library code."""
    threads = threads or real_core_count()
    torch.set_num_threads(threads)
    return threads


def init(device_request: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU.
    Returns this process's place and its device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_request)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device


@functools.cache  # the hardware does not change while a process runs; every checkpoint's metadata asks again
def cpu_info(field_names: tuple[str, ...]) -> str:
    """The first value of one of ``field_names`` in Linux's /proc/cpuinfo; "" where it has none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in field_names:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (x86 "flags", Arm "Features"); empty elsewhere."""
    return set(cpu_info(("flags", "Features")).split())


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 9454", "Intel(R) Xeon(R) Platinum 8480+"), or the machine type
    where Linux does not say (benchmarks from different hosts are only comparable knowing which)."""
    return cpu_info(("model name", "Model", "Hardware")) or platform.machine() or "CPU"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: CUDA GPUs from Ampere on; CPUs with AVX-512 BF16 or
    AMX (x86) or the BF16 extension (Arm). Elsewhere oneDNN emulates bf16, which is slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def pick_device(request: str) -> torch.device:
    """'auto' means CUDA, else Apple MPS, else CPU. An explicit device that is missing is an error."""
    if request == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(request)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available; use --device auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for but Apple MPS is not available; use --device auto or cpu")
    return device


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t)
        t /= info.world_size
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
