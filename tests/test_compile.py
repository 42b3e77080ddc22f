"""The ops under torch.compile, torch.export and autocast, and the package's import behaviour."""
import json
import subprocess
import sys

import pytest
import torch

import squeezeae_ext as sx
from squeezeae_ext import reference
from helpers import fire_weights, pooled_input, run_python


class Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fire = sx.Fire(6, 3, 4, 4)
        self.unpool_fire = sx.UnpoolFire(8, 4, 3, 3, kernel_size=3, stride=2)
        self.unpool = sx.MaxUnpool2d(3, 2)

    def forward(self, x, indices):
        y = self.fire(x)
        return self.unpool_fire(y, indices, output_size=(13, 13)) + self.unpool(y[:, :6], indices[:, :6], (13, 13))[:, :6].sum(1, keepdim=True)


def decoder_inputs(device):
    x = torch.randn(2, 6, 6, 6, device=device)
    _, indices = pooled_input(2, 8, 13, 13, 3, 2, device=device)
    return x, indices


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(device, backend):
    model = Decoder().to(device)
    x, indices = decoder_inputs(device)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = compiled(x1, indices), model(x2, indices)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_compile_dynamic_shapes(device):
    fire = sx.Fire(5, 3, 4, 4).to(device)
    compiled = torch.compile(fire, backend="aot_eager", fullgraph=True, dynamic=True)
    for size in (5, 7, 9):
        x = torch.randn(2, 5, size, size + 1, device=device)
        torch.testing.assert_close(compiled(x), fire(x))


def test_export(device):
    model = Decoder().to(device).eval()
    x, indices = decoder_inputs(device)
    program = torch.export.export(model, (x, indices))
    assert any("squeezeae" in str(node.target) for node in program.graph.nodes)
    torch.testing.assert_close(program.module()(x, indices), model(x, indices))


def test_autocast_runs_fire_in_the_autocast_dtype(device):
    dtype = torch.bfloat16
    x = torch.randn(2, 6, 7, 7, device=device)
    weights = fire_weights(6, 3, 4, 4, device=device)
    with torch.autocast(device.type, dtype=dtype):
        out = sx.functional.fire(x, *weights)
        ref = reference.fire(x, *weights)
    assert out.dtype == ref.dtype == dtype
    torch.testing.assert_close(out.float(), ref.float(), rtol=5e-2, atol=5e-2)
    pooled, indices = pooled_input(2, 6, 9, 9, 3, 2, device=device)
    with torch.autocast(device.type, dtype=dtype):
        out = sx.functional.unpool_fire(pooled, indices, *weights, 3, 2, 0, (9, 9))
        unpooled = sx.functional.max_unpool2d(pooled, indices, 3, 2, 0, (9, 9))
    assert out.dtype == dtype
    assert unpooled.dtype == torch.float32, "max_unpool2d only moves values: no autocast"
    double = torch.randn(1, 6, 4, 4, dtype=torch.float64, device=device)
    with torch.autocast(device.type, dtype=dtype):
        assert sx.functional.fire(double, *[w.double() for w in weights]).dtype == torch.float64


def test_has_cuda_kernels_is_a_bool():
    assert isinstance(sx.has_cuda_kernels(), bool)
    assert sx.__version__


def test_missing_extension_raises_helpful_import_error():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'squeezeae_ext._C':\n"
        "            raise ImportError('simulated missing build')\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    import squeezeae_ext\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install --no-build-isolation -e ." in done.stdout, done.stdout + done.stderr


def test_info_command(capsys):
    from squeezeae_ext.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    keys = ("cuda_kernels", "cpu_capability", "cpu_gemm", "cpu_simd", "cpu_l3_bytes", "max_unpool2d_stream_bytes")
    for key in keys:
        assert key in out


def test_cpu_paths_follow_the_overrides():
    """cpu_paths() reports what the kernels read: SQUEEZEAE_CPU_ISA caps the SIMD level, SQUEEZEAE_CPU_GEMM=plain
    the GEMM backend, SQUEEZEAE_CPU_L3_BYTES the L3 size and with it max_unpool2d's streaming threshold (8 MiB, or
    just over a quarter of the L3 where that is more)."""
    code = (
        "import json, squeezeae_ext\n"
        "from squeezeae_ext._ops import cpu_paths\n"
        "print(json.dumps(cpu_paths()))\n"
        "print('ok')\n"
    )
    cases = ((32 << 20, "scalar", (8 << 20) + 1), (1 << 30, "avx2", (1 << 28) + 1), (1 << 20, "scalar", 8 << 20))
    for l3, isa, stream in cases:
        printed = run_python(code, SQUEEZEAE_CPU_L3_BYTES=str(l3), SQUEEZEAE_CPU_ISA=isa, SQUEEZEAE_CPU_GEMM="plain")
        paths = json.loads(printed.splitlines()[0])
        assert paths["l3_bytes"] == l3 and paths["max_unpool2d_stream_bytes"] == stream
        assert paths["gemm"] == "plain" and paths["simd"] in ((isa,) if isa == "scalar" else ("avx2", "scalar"))
        assert paths["forward_tile_pixels"] in (192, 384) and paths["l2_bytes"] >= 0
        assert paths["bf16"] == "float32-copies"  # the bfloat16 micro-kernel is oneDNN's too
        assert paths["winograd_min_pixels"] == 1024
        assert paths["planar_max_call_pixels"] == 0  # the small calls' planar rule needs the AVX-512 transposes
        assert paths["forward_tiles"] == "measured"
    for setting, expected in (("on", 0), ("off", -1)):
        printed = run_python(code, SQUEEZEAE_CPU_WINOGRAD=setting)
        assert json.loads(printed.splitlines()[0])["winograd_min_pixels"] == expected
    for tiles in ("planar", "pixel-major"):
        printed = run_python(code, SQUEEZEAE_CPU_FORWARD_TILES=tiles)
        assert json.loads(printed.splitlines()[0])["forward_tiles"] == tiles
    paths = json.loads(run_python(code).splitlines()[0])
    assert paths["planar_max_call_pixels"] in ((0, 256) if paths["simd"] == "avx512" else (0,))


def test_unknown_forward_tiles_is_reported():
    """A mistyped SQUEEZEAE_CPU_FORWARD_TILES is named in a warning and ignored: the rules choose the tiles."""
    code = (
        "import json, torch, squeezeae_ext as sx\n"
        "from squeezeae_ext import reference\n"
        "from squeezeae_ext._ops import cpu_paths\n"
        "x = torch.randn(1, 4, 5, 5)\n"
        "w = [torch.randn(2, 4, 1, 1), torch.randn(2), torch.randn(3, 2, 1, 1), torch.randn(3),"
        " torch.randn(3, 2, 3, 3), torch.randn(3)]\n"
        "torch.testing.assert_close(sx.functional.fire(x, *w), reference.fire(x, *w), rtol=1e-5, atol=1e-5)\n"
        "print(json.dumps(cpu_paths()))\n"
        "print('ok')\n"
    )
    printed = run_python(code, SQUEEZEAE_CPU_FORWARD_TILES="planer")
    assert "SQUEEZEAE_CPU_FORWARD_TILES=planer is not one of planar, pixel-major: ignored" in printed
    assert json.loads(printed.splitlines()[0])["forward_tiles"] == "measured"
