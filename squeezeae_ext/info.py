"""``squeezeae info``: what this install holds and what it runs on."""
import json
import os
import platform


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")


def collect() -> dict:
    import torch

    from . import __version__, has_cuda_kernels
    from ._ops import cpu_paths
    from .bench import cpu_capability, cpu_model

    facts = {
        "squeezeae_ext": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_kernels": torch._C._dispatch_has_kernel_for_dispatch_key("squeezeae::fire", "CPU"),
        "cuda_kernels": has_cuda_kernels(),
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cuda_archs": torch.cuda.get_arch_list() if torch.cuda.is_available() else [],
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_capability": cpu_capability(torch),
        "cpu_count": os.cpu_count(),
    }
    facts.update({f"cpu_{key}" if not key.startswith("max_unpool2d") else key: value
                  for key, value in cpu_paths().items()})
    return facts


def run(args) -> int:
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(map(len, facts))
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0
