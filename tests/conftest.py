"""Shared fixtures: every test that takes ``device`` runs on the CPU and, where a GPU and the compiled CUDA
kernels are present, on CUDA; ``needs_cuda`` tests are skipped elsewhere."""
import pytest
import torch

import squeezeae_ext as sx


def cuda_ready() -> bool:
    return torch.cuda.is_available() and sx.has_cuda_kernels()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device and a build with the CUDA kernels")
    for item in items:
        if "needs_cuda" in item.keywords and not cuda_ready():
            item.add_marker(skip)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
