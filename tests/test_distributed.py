"""DDP plumbing on the CPU (gloo): one rank's failure is every rank's."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rtseg.training import distributed as ddp

from helpers import free_port


def _worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        info = ddp.DistInfo(rank=rank, world_size=2)
        # A non-finite loss on rank 1 only, as one bad batch would give.
        loss = torch.tensor(float("nan") if rank == 1 else 0.5)
        results[rank] = (ddp.any_rank(~torch.isfinite(loss), info),
                         ddp.any_rank(torch.tensor(False), info))
    finally:
        dist.destroy_process_group()


def test_a_non_finite_loss_on_one_rank_stops_every_rank():
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port(), results), nprocs=2, join=True)
    assert results[0] == results[1] == (True, False)


def test_any_rank_without_ddp_is_the_flag_itself():
    info = ddp.DistInfo()
    assert ddp.any_rank(torch.tensor(True), info) is True
    assert ddp.any_rank(torch.tensor(False), info) is False
