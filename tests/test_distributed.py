"""DDP on the CPU (gloo): one rank's failure is every rank's, ranks train on disjoint shards,
and validation split over ranks sums to the single-process confusion matrix."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rtseg.data import find_pairs
from rtseg.engines import untrained_engine
from rtseg.models import load_checkpoint
from rtseg.training import distributed as ddp
from rtseg.training.config import TrainConfig
from rtseg.training.epoch import make_train_loader, validate

from helpers import free_port


def _join(rank: int, port: int) -> ddp.DistInfo:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    return ddp.DistInfo(rank=rank, world_size=2)


def _any_rank_worker(rank: int, port: int, results) -> None:
    info = _join(rank, port)
    try:
        # A non-finite loss on rank 1 only, as one bad batch would give.
        loss = torch.tensor(float("nan") if rank == 1 else 0.5)
        results[rank] = (ddp.any_rank(~torch.isfinite(loss), info),
                         ddp.any_rank(torch.tensor(False), info))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank():
    results = mp.Manager().dict()
    mp.spawn(_any_rank_worker, args=(free_port(), results), nprocs=2, join=True)
    assert results[0] == results[1] == (True, False)


@pytest.mark.parametrize("rank, main", [(None, True), ("0", True), ("3", False)])
def test_only_rank_0_reports(monkeypatch, rank, main):
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    assert ddp.is_main() is main


def test_any_rank_without_ddp_is_the_flag_itself():
    info = ddp.DistInfo()
    assert ddp.any_rank(torch.tensor(True), info) is True
    assert ddp.any_rank(torch.tensor(False), info) is False


def test_ranks_train_on_disjoint_shards(camvid_root):
    pairs = find_pairs("camvid", camvid_root, "train")[:9]
    cfg = TrainConfig(model="segnet_r50", dataset="camvid", data_root=camvid_root,
                      batch_size=2, workers=0)
    samplers = [make_train_loader(pairs, cfg, (64, 64), (64, 64), 11,
                                  ddp.DistInfo(rank=rank, world_size=2))[1] for rank in (0, 1)]
    for epoch in (0, 1):
        shards = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        assert len(shards[0]) == len(shards[1]) == 4  # 9 images: one dropped, 4 per rank
        assert not set(shards[0]) & set(shards[1])
        assert set(shards[0]) | set(shards[1]) <= set(range(9))


VAL_IMAGES = 5  # odd: the ranks score 3 and 2 images


def _validate(engine, camvid_root, info: ddp.DistInfo) -> list:
    segmenter, metadata = load_checkpoint(engine)
    cfg = TrainConfig(model=metadata.model, dataset="camvid", data_root=camvid_root,
                      batch_size=2, workers=0)
    pairs = find_pairs("camvid", camvid_root, "val")[:VAL_IMAGES]
    return validate(segmenter, metadata, pairs, cfg, torch.device("cpu"), info).matrix.tolist()


def _validate_worker(rank: int, port: int, engine, camvid_root, results) -> None:
    info = _join(rank, port)
    try:
        results[rank] = _validate(engine, camvid_root, info)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_validation_over_two_ranks_sums_to_the_single_process_matrix(camvid_root, tmp_path):
    engine = untrained_engine("unet_resnet18", (64, 96), tmp_path)
    results = mp.Manager().dict()
    mp.spawn(_validate_worker, args=(free_port(), engine, camvid_root, results), nprocs=2,
             join=True)
    single = _validate(engine, camvid_root, ddp.DistInfo())
    assert np.sum(single) > 0.9 * VAL_IMAGES * 360 * 480
    assert results[0] == results[1] == single
