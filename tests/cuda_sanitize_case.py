"""One small, odd-sized forward + backward of every op on CUDA, for compute-sanitizer (not a pytest file):

    compute-sanitizer --tool memcheck  python tests/cuda_sanitize_case.py
    compute-sanitizer --tool racecheck python tests/cuda_sanitize_case.py

Covers NCHW and channels_last, biases present and absent, the gather and winner unpooling paths, S > 64
(squeeze recomputed per chunk) and an out-of-range index (raised, nothing written out of bounds).
"""
import torch
import torch.nn.functional as F

import squeezeae_ext  # noqa: F401

ops = torch.ops.squeezeae
dev = torch.device("cuda")


def weights(C, S, E1, E3, bias=True):
    def conv(o, i, k):
        return (torch.randn(o, i, k, k, device=dev) / (i * k * k) ** 0.5).requires_grad_(), (
            torch.randn(o, device=dev).requires_grad_() if bias else None)

    (wsq, bsq), (w1, b1), (w3, b3) = conv(S, C, 1), conv(E1, S, 1), conv(E3, S, 3)
    return [wsq, bsq, w1, b1, w3, b3]


def backward(out, *inputs):
    leaves = [t for t in inputs if t is not None and t.requires_grad]
    torch.autograd.grad(out, leaves, torch.randn_like(out))


def main():
    torch.manual_seed(0)
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for (N, C, H, W, S, E1, E3, bias) in [(2, 5, 7, 9, 3, 4, 6, True), (1, 37, 5, 3, 70, 65, 3, False)]:
            x = torch.randn(N, C, H, W, device=dev).to(memory_format=fmt).requires_grad_()
            w = weights(C, S, E1, E3, bias)
            backward(ops.fire(x, *w), x, *w)

        src = torch.randn(2, 5, 11, 9, device=dev).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        pooled, idx = F.max_pool2d(src, 3, 2, ceil_mode=True, return_indices=True)
        pool = ([3, 3], [2, 2], [0, 0], [11, 9])
        for indices in (idx, torch.randint(0, 99, idx.shape, device=dev)):  # gather path, winner path
            values = pooled.detach().clone().requires_grad_()
            backward(ops.max_unpool2d(values, indices, *pool), values)
            w = weights(5, 3, 4, 6)
            backward(ops.unpool_fire(values, indices, *w, *pool), values, *w)

        bad = idx.clone()
        bad[0, 0, 0, 0] = 99
        try:
            ops.max_unpool2d(pooled, bad, *pool)
            raise AssertionError("an out-of-range index did not raise")
        except RuntimeError as error:
            assert "Found an invalid max index" in str(error)
    torch.cuda.synchronize()
    print("cuda_sanitize_case: ok")


if __name__ == "__main__":
    main()
