"""torchrun/DDP plumbing: one process per device, gloo on CPU, NCCL on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: a process group exists, even of one process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main() -> bool:
    """Whether this process reports for the job: rank 0 of a torchrun job (``$RANK``), or a
    process torchrun did not start."""
    return int(os.environ.get("RANK", "0")) == 0


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op when absent)."""
    if "WORLD_SIZE" not in os.environ:
        return DistInfo()
    # Under torchrun the group is formed even for one process, so one GPU runs the same
    # NCCL/DDP code path as eight.
    info = DistInfo(int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"]),
                    int(os.environ.get("LOCAL_RANK", "0")), launched=True)
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def backend_name(info: DistInfo) -> str | None:
    """The process group's backend (``nccl``, ``gloo``), None outside torchrun."""
    return dist.get_backend() if info.enabled and dist.is_initialized() else None


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(array: np.ndarray, info: DistInfo, device: torch.device) -> np.ndarray:
    """Element-wise sum of a numpy array over all ranks."""
    if not info.enabled:
        return array
    t = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable, produced by our own code), in rank order."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: torch.Tensor, info: DistInfo) -> bool:
    """True on every rank when ``flag`` (a bool tensor on this rank's device) is true on any
    rank — so that one rank's failure stops all of them at the same step instead of leaving the
    others waiting in the next collective."""
    if info.enabled:
        flag = flag.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)


def broadcast_tensor(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Rank 0's tensor on every rank."""
    if info.enabled:
        dist.broadcast(t, src=0)
    return t


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank.

    DDP syncs buffers at the start of each forward, so after the last step every rank's
    statistics differ a little; validation and saving must use one network.
    """
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def barrier(info: DistInfo) -> None:
    """Wait for every rank."""
    if info.enabled:
        dist.barrier()
