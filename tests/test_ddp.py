"""Two CPU processes under torchrun (gloo on 127.0.0.1) train like one process on the same global batch."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from squeezeae_ext.cli import main

ARGS = ["--widths", "4,8", "--latent-channels", "4", "--batch-size", "16", "--epochs", "1", "--lr", "1e-3",
        "--val-fraction", "0.2", "--quiet", "--device", "cpu"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one(tmp_path):
    # 80 images: 64 to train (4 global steps of 16, 8 per process), 16 held out
    data = tmp_path / "images.npy"
    np.save(data, np.random.default_rng(0).random((80, 1, 16, 16), dtype=np.float32))
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "squeezeae_ext", "train",
               "--data", str(data), "--out", str(tmp_path / "ddp"), *ARGS]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"torchrun did not finish in 90 s: {error.stdout} {error.stderr}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "ddp")) == ["checkpoint.pt", "metrics.json", "reconstruction.png"]

    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 16
    assert metrics["replica_max_abs_diff"] == 0.0  # every process holds rank 0's parameters, bit for bit

    threads = torch.get_num_threads()
    try:
        assert main(["train", "--data", str(data), "--out", str(tmp_path / "single"), *ARGS, "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    assert ddp["config"] == single["config"]
    for name, tensor in single["model"].items():
        torch.testing.assert_close(ddp["model"][name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    np.testing.assert_allclose(ddp["history"][0]["train_loss"], single["history"][0]["train_loss"], rtol=1e-5)
