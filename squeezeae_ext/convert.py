"""convert(model): swaps torchvision-style Fire blocks and nn.MaxUnpool2d for the fused modules in place of
the originals, sharing the very same Parameter objects so optimisers and state dicts are unaffected."""
import copy

from torch import nn

from .modules import Fire, MaxUnpool2d

__all__ = ["convert", "is_torchvision_fire"]


def _is_conv(module, kernel: int, padding: int) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (kernel, kernel)
        and module.stride == (1, 1)
        and module.padding == (padding, padding)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def is_torchvision_fire(module: nn.Module) -> bool:
    """A module shaped like torchvision's Fire: squeeze 1x1, expand1x1 1x1, expand3x3 3x3 pad 1, chained."""
    if isinstance(module, Fire):
        return False
    squeeze = getattr(module, "squeeze", None)
    expand1x1 = getattr(module, "expand1x1", None)
    expand3x3 = getattr(module, "expand3x3", None)
    return (
        _is_conv(squeeze, 1, 0)
        and _is_conv(expand1x1, 1, 0)
        and _is_conv(expand3x3, 3, 1)
        and expand1x1.in_channels == squeeze.out_channels
        and expand3x3.in_channels == squeeze.out_channels
    )


def _fused_fire(module: nn.Module) -> Fire:
    fused = Fire.__new__(Fire)
    nn.Module.__init__(fused)
    fused.inplanes = module.squeeze.in_channels
    for name, child in module.named_children():  # keeps the original children (and their Parameters)
        setattr(fused, name, child)
    fused.train(module.training)
    return fused


def _fused_unpool(module: nn.MaxUnpool2d) -> MaxUnpool2d:
    fused = MaxUnpool2d(module.kernel_size, module.stride, module.padding)
    fused.train(module.training)
    return fused


def convert(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Returns ``model`` with every torchvision-style Fire replaced by the fused :class:`Fire` and every
    ``nn.MaxUnpool2d`` by the fused :class:`MaxUnpool2d`.

    The fused Fire reuses the original ``squeeze``/``expand1x1``/``expand3x3`` modules, so parameters are the
    same objects and state_dict keys do not change. With ``inplace=False`` the module tree is copied first
    (the original model keeps its layers) but parameters and buffers are still shared, not copied.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        shared = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
        model = copy.deepcopy(model, memo=shared)
    if is_torchvision_fire(model):
        return _fused_fire(model)
    if type(model) is nn.MaxUnpool2d:
        return _fused_unpool(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_torchvision_fire(child):
                setattr(parent, name, _fused_fire(child))
            elif type(child) is nn.MaxUnpool2d:
                setattr(parent, name, _fused_unpool(child))
    return model
