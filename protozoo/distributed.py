"""The few collective operations protozoo needs, each a no-op in a single process.

Accelerate owns the process group; these helpers only use it when it is up, so every module
also runs in one CPU process with no distributed setup at all.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a torch.distributed process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` across processes in place and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` with rank ``src``'s copy in place and return it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def global_batch_mean(x: Tensor) -> Tensor:
    """Mean over dim 0 of ``x`` gathered from every process, with an exact gradient under DDP.

    The value is the mean over the global batch. The gradient flows only into the local rows,
    scaled by the world size so that DDP's averaging of gradients over processes gives the
    gradient of the global mean.

    Args:
        x: (B, ...) local rows.

    Returns:
        (...) mean over the B * world_size rows of all processes.
    """
    local_sum = x.sum(dim=0)
    if not is_distributed():
        return local_sum / x.shape[0]
    total = all_reduce_sum_(local_sum.detach().clone())
    count = all_reduce_sum_(torch.tensor(float(x.shape[0]), device=x.device))
    w = world_size()
    return (total + w * (local_sum - local_sum.detach())) / count


def global_logsumexp(x: Tensor) -> Tensor:
    """logsumexp over dim 0 of ``x`` gathered from every process (no gradient), keeping the dim.

    Args:
        x: (B, ...) local rows.

    Returns:
        (1, ...) log of the summed exponentials over the B * world_size rows of all processes.
    """
    peak = x.amax(dim=0, keepdim=True)
    if is_distributed():
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    return peak + all_reduce_sum_((x - peak).exp().sum(dim=0, keepdim=True)).log()
