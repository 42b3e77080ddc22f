"""Drop-in modules: parameter names, constructors and initialisation of torchvision's Fire, nn.MaxPool2d and
nn.MaxUnpool2d."""
from typing import Optional, Sequence

from torch import Tensor, nn

from . import functional
from .squeezenet import TorchvisionFire

__all__ = ["Fire", "MaxPool2d", "MaxUnpool2d", "UnpoolFire"]

_MISSING = object()


def _conv_parameters(fire: nn.Module) -> list:
    """[squeeze.weight, squeeze.bias, expand1x1.weight, ...] of a Fire, read from the children's parameter dicts
    (attribute access through nn.Module.__getattr__ took ~7 of the ~18 us of a small Fire's call). A name missing
    from a dict, as under a parametrization, pruning or weight_norm, is looked up as an attribute, so those apply."""
    values = []
    for name in ("squeeze", "expand1x1", "expand3x3"):
        conv = fire._modules[name]
        params = conv._parameters
        weight = params.get("weight")
        values.append(conv.weight if weight is None else weight)
        bias = params.get("bias", _MISSING)
        values.append(conv.bias if bias is _MISSING else bias)
    return values


class Fire(TorchvisionFire):
    """torchvision.models.squeezenet.Fire computed by the fused op.

    Children ``squeeze``, ``expand1x1`` and ``expand3x3`` are the same ``nn.Conv2d`` layers torchvision builds
    (same names, shapes and default initialisation), so state dicts load both ways; only ``forward`` differs.
    """

    def forward(self, x: Tensor) -> Tensor:
        return functional.fire(x, *_conv_parameters(self))


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (same constructor, attributes and results) on the extension's CPU kernels; other devices run
    ``F.max_pool2d``. Without ``return_indices`` and outside autograd it writes no indices."""

    def forward(self, input: Tensor):
        return functional.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                     ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class MaxUnpool2d(nn.Module):
    """nn.MaxUnpool2d with a deterministic rule for duplicate indices (the latest in row-major order wins)."""

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding

    def forward(self, input: Tensor, indices: Tensor, output_size: Optional[Sequence[int]] = None) -> Tensor:
        return functional.max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class UnpoolFire(Fire):
    """``Fire(...)(max_unpool2d(input, indices, ...))`` fused: the unpooled tensor never exists in memory (except in
    the bfloat16 forward on CPUs with a bfloat16 micro-kernel, which unpools in bfloat16 first: faster there).

    Parameters are named exactly as Fire's, so a Fire's state dict loads into it.
    """

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int,
                 kernel_size=2, stride=None, padding=0) -> None:
        super().__init__(inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding

    def forward(self, input: Tensor, indices: Tensor, output_size: Optional[Sequence[int]] = None) -> Tensor:
        return functional.unpool_fire(
            input, indices, *_conv_parameters(self), self.kernel_size, self.stride, self.padding, output_size
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
