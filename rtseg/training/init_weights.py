"""Where training starts: a new network, or ``--init``'s weights (a pruned network keeps its
narrower layers, and the run's checkpoints say so)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from rtseg.data import DatasetSpec
from rtseg.errors import BadInput
from rtseg.models import build_model, canonical_name, load_checkpoint, read_checkpoint_metadata
from rtseg.models.pruning import PRUNED_KEY
from rtseg.training.config import TrainConfig


def check_init(path: Path, name: str, spec: DatasetSpec) -> None:
    """BadInput unless ``path`` holds weights of model ``name`` for ``spec``'s classes."""
    if not Path(path).is_file():
        raise BadInput(f"--init {path}: no such file")
    meta = read_checkpoint_metadata(path)
    if canonical_name(meta.model) != name or meta.num_classes != spec.num_classes:
        raise BadInput(f"--init {path} holds {meta.model} with {meta.num_classes} classes, "
                       f"not {name} with {spec.num_classes}")


def initial_network(cfg: TrainConfig, name: str, spec: DatasetSpec) -> tuple[nn.Module, dict]:
    """The network training starts from (``--init``'s weights, else a new one) and the
    metadata it passes on to the run's checkpoints (a pruned network's shapes)."""
    if cfg.init is None:
        return build_model(name, spec.num_classes, cfg.encoder_weights), {}
    segmenter, meta = load_checkpoint(cfg.init)
    pruned = meta.extra.get(PRUNED_KEY)
    return segmenter.net, ({PRUNED_KEY: pruned} if pruned else {})
