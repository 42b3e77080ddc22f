"""squeezeae_ext: fused SqueezeNet Fire, max-unpool and unpool+Fire kernels for PyTorch (CPU and CUDA), and a CPU
max-pool."""
from ._version import __version__
from ._ops import has_cuda_kernels
from . import functional, reference
from .convert import convert
from .modules import Fire, MaxPool2d, MaxUnpool2d, UnpoolFire
from .models import ConvAutoencoder, SqueezeAutoencoder

__all__ = [
    "__version__",
    "has_cuda_kernels",
    "functional",
    "reference",
    "convert",
    "Fire",
    "MaxPool2d",
    "MaxUnpool2d",
    "UnpoolFire",
    "SqueezeAutoencoder",
    "ConvAutoencoder",
]
