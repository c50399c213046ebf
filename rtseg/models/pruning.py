"""Channel pruning: a trained network made narrower, layer by layer, keeping its best filters.

``prune_channels`` removes the same fraction of output channels from every prunable group of
layers (a convolution, its batch norm and every layer that reads it, concatenated skips of a
UNet included), ranked by the L1 norm of their weights — torch-pruning's dependency graph
finds the groups. The result is the registry's architecture with narrower layers, so a
checkpoint of it is the registry's model plus the shapes of its tensors: ``fit_to_state``
narrows a freshly built network to them before the weights are loaded. Fine-tune after
pruning (``rtseg train --init``): the network loses most of its accuracy at the cut and
regains it within a few epochs.
"""

from __future__ import annotations

import torch
from torch import nn

from rtseg.errors import BadInput

# Metadata key of a pruned checkpoint: {"ratio": r, "from": model file name}.
PRUNED_KEY = "pruned"


def prune_channels(net: nn.Module, ratio: float, input_size: tuple[int, int],
                   keep: list[nn.Module]) -> nn.Module:
    """Remove ``ratio`` (0 < ratio < 1) of the output channels of every prunable layer of
    ``net`` in place, lowest L1 norm first; the layers in ``keep`` (the classifier) keep
    their outputs. Returns ``net``."""
    import torch_pruning as tp  # only this step needs it

    if not 0.0 < ratio < 1.0:
        raise BadInput(f"pruning ratio {ratio} must lie between 0 and 1")
    example = torch.zeros(1, 3, *input_size)
    was_training = net.training
    net.eval()
    pruner = tp.pruner.BasePruner(net, example, pruning_ratio=ratio, ignored_layers=keep,
                                  importance=tp.importance.GroupMagnitudeImportance(p=1))
    pruner.step()
    net.train(was_training)
    return net


def _narrowed(module: nn.Module, weight: torch.Tensor) -> nn.Module | None:
    """A copy of ``module``'s layer type with ``weight``'s shape, or None when the shapes
    already agree (or ``module`` is not a layer pruning changes)."""
    if isinstance(module, nn.Conv2d) and not isinstance(module, nn.ConvTranspose2d):
        if weight.shape == module.weight.shape:
            return None
        if module.groups != 1:
            raise BadInput("pruned grouped convolutions are not supported")
        return nn.Conv2d(weight.shape[1], weight.shape[0], module.kernel_size, module.stride,
                         module.padding, module.dilation, 1, module.bias is not None,
                         module.padding_mode)
    if isinstance(module, nn.BatchNorm2d):
        if weight.shape[0] == module.num_features:
            return None
        return nn.BatchNorm2d(weight.shape[0], module.eps, module.momentum, module.affine,
                              module.track_running_stats)
    return None


def fit_to_state(net: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Narrow ``net``'s convolutions and batch norms, in place, to the shapes of the pruned
    weights ``state`` holds for them; ``net.load_state_dict(state)`` then fits. Returns
    ``net``."""
    for name, module in list(net.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None:
            continue
        new = _narrowed(module, weight)
        if new is not None:
            net.set_submodule(name, new)
    return net
