"""Distributed data parallel: process-group setup and a batch norm synchronized on any backend.

``torchrun --nproc_per_node=2 -m svdgrad train ...`` sets RANK, WORLD_SIZE,
LOCAL_RANK (and MASTER_ADDR/PORT); ``init_from_env`` reads them and starts
gloo on CPU or nccl on GPU.  torch's own SyncBatchNorm only runs on GPU, so
the trainer replaces every BatchNorm2d by ``SyncBatchNorm2d``, which
all-reduces the per-channel sums, then the sums of squared deviations from
the mean (two passes, as BatchNorm), with a differentiable all-reduce
(autograd flows through the reduction).  With it a DDP run over W processes computes
the same batch statistics and, after DDP's gradient averaging, the same
gradient as one process on the whole global batch, up to summation order.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank and world size from the torchrun environment (single process if unset)."""
    def get(name, default):
        v = os.environ.get(name)
        return int(v) if v not in (None, "") else default
    world = get("WORLD_SIZE", 1)
    return DistInfo(get("RANK", 0), world, get("LOCAL_RANK", 0), get("LOCAL_WORLD_SIZE", world))


def launch_command(info: DistInfo, env=None) -> tuple[list[str], str]:
    """(the command that starts ``svdgrad train`` again as this run was started, a note for the user).

    One process: ``svdgrad train``.  One node: ``torchrun --standalone --nproc_per_node=L`` (a free port of
    its own: the interrupted run's may still be taken).  Several nodes: their count, this node's rank
    (``GROUP_RANK``) and a static rendezvous at MASTER_ADDR:MASTER_PORT, which torchrun sets to rank 0's
    node; the note says to run it on each node with that node's --node_rank.
    """
    env = os.environ if env is None else env
    if not info.distributed:
        return ["svdgrad", "train"], ""
    local = info.local_world_size
    nodes = max(1, info.world_size // max(1, local))
    if nodes == 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={local}", "-m", "svdgrad", "train"], ""
    node = env.get("GROUP_RANK", "0")
    prefix = ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={local}", f"--node_rank={node}",
              f"--master_addr={env.get('MASTER_ADDR', '')}", f"--master_port={env.get('MASTER_PORT', '')}",
              "-m", "svdgrad", "train"]
    return prefix, f" (on each of the {nodes} nodes, with that node's --node_rank; this is node {node}'s)"


def restart_count(env=None) -> int:
    """How many times torchrun (``--max-restarts``) has restarted this run's processes: 0 on its first attempt
    and outside torchrun."""
    env = os.environ if env is None else env
    try:
        return max(0, int(env.get("TORCHELASTIC_RESTART_COUNT") or 0))
    except ValueError:
        return 0


def launch_identity(env=None, ppid: int | None = None) -> str | None:
    """This torchrun invocation, the same in each of its restarts and unique to it; None outside torchrun.

    torchrun's run id alone is not unique (``--rdzv-id`` defaults to ``none`` outside ``--standalone``), so
    the host and the agent that starts the processes (their parent: pid and, where /proc has it, start time)
    are part of it.  The agent is per node, so only the main process's identity is compared (``trainer``).
    """
    env = os.environ if env is None else env
    if "TORCHELASTIC_RESTART_COUNT" not in env:
        return None
    ppid = os.getppid() if ppid is None else ppid
    start = ""
    try:
        with open(f"/proc/{ppid}/stat") as f:  # field 22, starttime; the name in parentheses may hold spaces
            start = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    return f"{env.get('TORCHELASTIC_RUN_ID', '')}|{socket.gethostname()}|{ppid}|{start}"


def init_from_env(device: str, timeout: float | None = None) -> DistInfo:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA); ``timeout`` in seconds for its collectives
    (None: torch's default, 30 minutes for gloo)."""
    info = env_info()
    if info.distributed and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        extra = {} if timeout is None else {"timeout": timedelta(seconds=timeout)}
        store = attempt_store()
        if store is None:
            dist.init_process_group(backend=backend, **extra)
        else:
            dist.init_process_group(backend=backend, store=store, rank=info.rank, world_size=info.world_size, **extra)
    return info


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective's timeout: gloo raises a plain RuntimeError "Timed out waiting ...ms"."""
    return isinstance(exc, RuntimeError) and "Timed out waiting" in str(exc)


def attempt_store(env=None):
    """The process group's store under torchrun's shared agent store: its keys under this attempt's prefix.

    torchrun (``TORCHELASTIC_USE_AGENT_STORE``) lends its own TCPStore to the processes and keeps it across
    ``--max-restarts``, and torch's ``env://`` rendezvous adds no prefix per attempt there (torch 2.13): the
    restarted processes read the dead ones' gloo addresses and hung in ``init_process_group``, or failed on
    "Connection refused".  Under a prefix of the restart count each attempt meets its own processes.  None
    (torch's own ``env://``) outside that case.
    """
    env = os.environ if env is None else env
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        return None
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), int(env["WORLD_SIZE"]), is_master=False,
                          timeout=timedelta(minutes=10))
    return dist.PrefixStore(f"svdgrad/attempt_{restart_count(env)}", store)


def shutdown(wait: bool = True) -> None:
    """Tear the process group down.  With ``wait`` every process first waits for the others
    (gloo aborts a process that destroys its group while a peer still uses it); after an
    error pass ``wait=False``, since the peers may never arrive."""
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """y = Σ_r x_r over the processes; the gradient of each x_r is Σ_r ∂L_r/∂y (a sum again)."""

    @staticmethod
    def forward(x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, gy):
        g = gy.clone()
        dist.all_reduce(g)
        return g


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are over the batch of every process."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        # Two passes, as BatchNorm: the mean over every process, then the sum of squared deviations from it.
        # (E[x²] - mean² in one pass cancels catastrophically: features of mean 1e3 and spread 1 lost every
        # digit of their variance in float32.)
        C = x.shape[1]
        count = torch.full((1,), float(x.numel() // C), dtype=x.dtype, device=x.device)
        total = _AllReduceSum.apply(torch.cat([x.sum(dim=(0, 2, 3)), count]))  # (C + 1,)
        n = total[-1]
        mean = total[:C] / n
        d = x - mean[None, :, None, None]
        var = _AllReduceSum.apply((d * d).sum(dim=(0, 2, 3))) / n  # biased, as BN normalizes with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
        y = d * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every nn.BatchNorm2d in ``module`` by SyncBatchNorm2d, keeping parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(next(iter(child.state_dict().values())).device)
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module


def all_reduce_sum(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_lists(values: list, ) -> list:
    """Concatenate a list from every process (in rank order)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, values)
    return [v for part in out for v in part]


def any_flag(flag: bool, device) -> bool:
    """``flag`` OR-ed over the processes."""
    return any_flags([flag], device)[0]


def any_flags(flags: list[bool], device) -> list[bool]:
    """Each flag OR-ed over the processes, in one all-reduce."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [v > 0 for v in t.tolist()]


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy process ``src``'s buffers into ``module`` on every process (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        for b in module.buffers():
            dist.broadcast(b, src)


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
