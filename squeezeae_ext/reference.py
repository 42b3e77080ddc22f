"""Plain-PyTorch versions of the three ops: the oracle of the tests and the eager baseline of the benchmark."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fire", "max_unpool2d", "unpool_fire"]


def fire(
    x: Tensor,
    squeeze_weight: Tensor,
    squeeze_bias: Optional[Tensor],
    expand1x1_weight: Tensor,
    expand1x1_bias: Optional[Tensor],
    expand3x3_weight: Tensor,
    expand3x3_bias: Optional[Tensor],
) -> Tensor:
    """torchvision.models.squeezenet.Fire.forward, written with functional convs."""
    s = F.relu(F.conv2d(x, squeeze_weight, squeeze_bias))
    return torch.cat(
        [F.relu(F.conv2d(s, expand1x1_weight, expand1x1_bias)),
         F.relu(F.conv2d(s, expand3x3_weight, expand3x3_bias, padding=1))],
        1,
    )


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
    return F.max_unpool2d(input, indices, kernel_size, stride, padding, output_size)


def unpool_fire(
    input: Tensor,
    indices: Tensor,
    squeeze_weight: Tensor,
    squeeze_bias: Optional[Tensor],
    expand1x1_weight: Tensor,
    expand1x1_bias: Optional[Tensor],
    expand3x3_weight: Tensor,
    expand3x3_bias: Optional[Tensor],
    kernel_size,
    stride=None,
    padding=0,
    output_size: Optional[Sequence[int]] = None,
) -> Tensor:
    unpooled = F.max_unpool2d(input, indices, kernel_size, stride, padding, output_size)
    return fire(unpooled, squeeze_weight, squeeze_bias, expand1x1_weight, expand1x1_bias, expand3x3_weight,
                expand3x3_bias)
