"""Input builders and the comparison rule shared by the op tests."""
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

# Tolerance relative to the reference's largest magnitude, per dtype. float32 allows for TF32 on CUDA.
REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}


def fire_weights(C, S, E1, E3, dtype=torch.float32, device="cpu", bias=True, scale=0.5):
    def rand(*shape):
        return (torch.randn(*shape, dtype=torch.float64) * scale).to(dtype=dtype, device=device)

    return [
        rand(S, C, 1, 1) / C**0.5 * 2, rand(S) if bias else None,
        rand(E1, S, 1, 1) / S**0.5 * 2, rand(E1) if bias else None,
        rand(E3, S, 3, 3) / (9 * S) ** 0.5 * 2, rand(E3) if bias else None,
    ]


def layout(t, name):
    """The same values in another memory layout: nchw, channels_last, or a non-contiguous strided view."""
    if name == "nchw":
        return t.contiguous()
    if name == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if name == "strided":  # every dim strided: a slice of a larger buffer, with H and W swapped in memory
        N, C, H, W = t.shape
        big = torch.zeros(N, C + 1, W * 2, H, dtype=t.dtype, device=t.device)
        view = big[:, 1:, ::2, :].transpose(2, 3)
        view.copy_(t)
        if H > 1 and W > 1:
            assert not view.is_contiguous() and not view.is_contiguous(memory_format=torch.channels_last)
        return view
    raise ValueError(name)


def pooled_input(N, C, H, W, kernel=3, stride=2, padding=0, dtype=torch.float32, device="cpu", ceil_mode=True):
    """(pooled, indices) from max_pool2d of a random tensor, as a decoder receives them."""
    x = torch.randn(N, C, H, W, dtype=torch.float64)
    pooled, indices = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True)
    return pooled.to(dtype=dtype, device=device), indices.to(device)


def assert_close_to(out, ref, dtype=None):
    """out (any dtype) against a float64 reference, within the dtype's rounding."""
    dtype = dtype or out.dtype
    assert out.shape == ref.shape, (out.shape, ref.shape)
    ref = ref.double().cpu()
    out = out.double().cpu()
    assert torch.isfinite(out).all(), "non-finite values in the output"
    scale = max(ref.abs().max().item(), 1.0)
    err = (out - ref).abs().max().item()
    assert err <= REL_TOL[dtype] * scale, f"max error {err:.3g} > {REL_TOL[dtype] * scale:.3g} ({dtype})"


def to64(tensors):
    return [None if t is None else t.detach().double().cpu() for t in tensors]


def run_check(module, function, isa=None, env=None):
    """Runs the check `function` of test module `module` here (isa and env None: this CPU's widest SIMD paths and
    its own cache sizes), or in a fresh process with SQUEEZEAE_CPU_ISA=isa and the variables of `env` set (the
    kernels read them once per process)."""
    if isa is None and not env:
        getattr(sys.modules[module], function)()
        return
    code = f"import sys; sys.path.insert(0, sys.argv[1])\nimport {module}\n{module}.{function}()\nprint('ok')\n"
    env = dict(os.environ, **(env or {}))
    if isa is not None:
        env["SQUEEZEAE_CPU_ISA"] = isa
    done = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def run_python(code, **env):
    """Runs `code` in a fresh Python, warnings always shown, with the variables of `env` set (the kernels read
    them once per process); asserts it printed 'ok' last and returns all it printed."""
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
    return done.stdout + done.stderr
