"""convert(model): swaps torchvision-style Fire blocks, nn.MaxUnpool2d and nn.MaxPool2d for the extension's modules
in place of the originals, sharing the very same Parameter objects so optimisers and state dicts are unaffected."""
import copy

from torch import nn

from .modules import Fire, MaxPool2d, MaxUnpool2d

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


def _fast_pool(module: nn.MaxPool2d) -> MaxPool2d:
    fast = MaxPool2d(module.kernel_size, module.stride, module.padding, module.dilation,
                     return_indices=module.return_indices, ceil_mode=module.ceil_mode)
    fast.train(module.training)
    return fast


def convert(model: nn.Module, inplace: bool = False, max_pool: bool = True) -> nn.Module:
    """Returns ``model`` with every torchvision-style Fire replaced by the fused :class:`Fire`, every
    ``nn.MaxUnpool2d`` by the fused :class:`MaxUnpool2d` and, unless ``max_pool=False``, every ``nn.MaxPool2d`` by
    :class:`MaxPool2d` (the same results; on the CPU, the extension's kernel).

    The fused Fire reuses the original ``squeeze``/``expand1x1``/``expand3x3`` modules, so parameters are the
    same objects and state_dict keys do not change. With ``inplace=False`` the module tree is copied first
    (the original model keeps its layers) but parameters and buffers are still shared, not copied.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(max_pool, bool):
        raise TypeError(f"convert: max_pool must be a bool, got {type(max_pool).__name__}")
    if not inplace:
        shared = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
        model = copy.deepcopy(model, memo=shared)

    def swapped(module):
        if is_torchvision_fire(module):
            return _fused_fire(module)
        if type(module) is nn.MaxUnpool2d:
            return _fused_unpool(module)
        if max_pool and type(module) is nn.MaxPool2d:
            return _fast_pool(module)
        return None

    whole = swapped(model)
    if whole is not None:
        return whole
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            replacement = swapped(child)
            if replacement is not None:
                setattr(parent, name, replacement)
    return model
