"""Process-group set-up for ``torchrun`` (gloo on CPU, nccl on CUDA); a no-op for one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "pick_device", "setup_distributed"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def from_main(self, value: float, device: torch.device) -> float:
        """Rank 0's ``value`` on every rank (a decision all ranks must share, e.g. to stop)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def close(self) -> None:
        """Leave the process group once every rank is done with its collectives (a gloo group torn
        down while a peer's work is still in flight can abort the process at exit)."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this process's CUDA device when there is one, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device_name: str) -> tuple[DistContext, torch.device]:
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext(), pick_device(device_name)
    context = DistContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name, context.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return context, device
