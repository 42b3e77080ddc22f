"""squeezeae bench: the byte/FLOP arithmetic against hand-computed values, the timing helpers on fake timers,
the SqueezeNet spatial sizes, and CLI smoke runs on tiny shapes."""
import json

import pytest
import torch
import torch.nn.functional as F

from squeezeae_ext import bench
from squeezeae_ext.cli import main


# ------------------------------------------------------------------------------------ bytes, FLOPs, rates
def test_fire_bytes_and_flops_by_hand():
    # squeezenet1_1 fire2: C=64, S=16, E1=E3=64 at 55x55, batch 1, float32
    # x 64*55*55 = 193600, out 128*3025 = 387200,
    # weights 16*64+16 + 64*16+64 + 64*16*9+64 = 11408 -> (193600+387200+11408)*4 bytes
    assert bench.fire_weight_elements(64, 16, 64, 64) == 11408
    assert bench.fire_bytes(1, 64, 16, 64, 64, 55, 55, 4) == 2368832
    assert bench.fire_bytes(1, 64, 16, 64, 64, 55, 55, 4, backward=True) == 3 * 2368832
    # MACs: squeeze 3025*64*16, expand1x1 3025*16*64, expand3x3 3025*16*64*9
    assert bench.fire_macs(1, 64, 16, 64, 64, 55, 55) == {
        "squeeze": 3097600, "expand1x1": 3097600, "expand3x3": 27878400}
    assert bench.fire_flops(1, 64, 16, 64, 64, 55, 55) == 68147200
    # backward: 2 * (3 * 34073600 + 3097600)
    assert bench.fire_flops(1, 64, 16, 64, 64, 55, 55, backward=True) == 210636800
    # batch scales both linearly except the weights term of the bytes
    assert bench.fire_flops(8, 64, 16, 64, 64, 55, 55) == 8 * 68147200
    assert bench.fire_bytes(2, 64, 16, 64, 64, 55, 55, 2) == (2 * 193600 + 2 * 387200 + 11408) * 2


def test_unpool_bytes_and_flops_by_hand():
    # batch 2, C=128 pooled 13x13 -> unpooled 27x27, float16, int64 indices
    # P = 2*128*169 = 43264 pooled elements, U = 2*128*729 = 186624 unpooled elements
    assert bench.max_unpool2d_bytes(2, 128, 13, 13, 27, 27, 2) == 43264 * 2 + 43264 * 8 + 186624 * 2 == 805888
    # backward: + indices read + grad_output gathered at P positions + grad_input (P) written
    assert bench.max_unpool2d_bytes(2, 128, 13, 13, 27, 27, 2, backward=True) == 805888 + 346112 + 173056
    # unpool_fire with S=32, E1=E3=128: weights 45344, output 2*256*729 = 373248
    assert bench.fire_weight_elements(128, 32, 128, 128) == 45344
    forward = (43264 + 373248 + 45344) * 2 + 43264 * 8
    assert bench.unpool_fire_bytes(2, 128, 32, 128, 128, 13, 13, 27, 27, 2) == forward == 1269824
    # backward: grad_output, output, pooled input, indices, weights read; grad_input and weight grads written
    backward = (2 * 373248 + 2 * 43264 + 2 * 45344) * 2 + 43264 * 8
    assert bench.unpool_fire_bytes(2, 128, 32, 128, 128, 13, 13, 27, 27, 2, backward=True) == forward + backward
    assert bench.unpool_fire_flops(2, 128, 32, 128, 128, 27, 27) == bench.fire_flops(2, 128, 32, 128, 128, 27, 27)


def test_rates_and_copy_bandwidth():
    assert bench.rate(2368832, 1e-3) == pytest.approx(2.368832)
    assert bench.rate(68147200, 2e-3) == pytest.approx(34.0736)
    assert bench.rate(None, 1.0) is None and bench.rate(10, 0) is None and bench.rate(10, None) is None
    # a copy reads and writes every byte
    assert bench.copy_bandwidth(10**9, 0.5) == pytest.approx(4.0)


# -------------------------------------------------------------------------------------------- statistics
def test_percentiles_and_summary():
    assert bench.percentile([5, 1, 3, 2, 4], 50) == 3
    assert bench.percentile([1, 2, 3, 4], 50) == 2.5
    assert bench.percentile([1, 2, 3, 4, 5], 25) == 2 and bench.percentile([1, 2, 3, 4, 5], 75) == 4
    s = bench.summarize_times([0.003, 0.001, 0.005, 0.002, 0.004])
    assert s["median_ms"] == pytest.approx(3) and s["p25_ms"] == pytest.approx(2) and s["p75_ms"] == pytest.approx(4)
    assert s["iqr_ms"] == pytest.approx(2) and s["iqr_rel"] == pytest.approx(2 / 3)
    assert s["min_ms"] == pytest.approx(1) and s["max_ms"] == pytest.approx(5) and s["reps"] == 5
    assert bench.geomean([2, 8]) == pytest.approx(4) and bench.geomean([None, 0]) is None


def test_interleaved_order_rotates():
    assert bench.interleaved_order(["a", "b", "c"], 4) == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert bench.interleaved_order(["a"], 2) == [["a"], ["a"]]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_run_interleaved_on_a_fake_timer():
    clock = FakeClock()
    calls = []

    def variant(name, duration):
        def fn():
            calls.append(name)
            clock.now += duration
        return bench.Variant(name, fn)

    def broken():
        raise NotImplementedError("Could not run 'squeezeae::fire' with arguments from the 'CPU' backend.\nmore")

    variants = [variant("fused", 1.0), variant("eager", 3.0), bench.Variant("compiled", broken)]
    bench.run_interleaved(variants, reps=3, warmup=2, timer=bench.CpuTimer(clock))
    fused, eager, compiled = variants
    # warm-up: the first call of each (failures caught), then warmup-1 more rounds; then ABAB... rotated
    assert calls == ["fused", "eager", "fused", "eager", "fused", "eager", "eager", "fused", "fused", "eager"]
    assert fused.times == [1.0] * 3 and eager.times == [3.0] * 3 and compiled.times == []
    assert not compiled.ok and compiled.error.startswith("NotImplementedError: Could not run")
    assert "\n" not in compiled.error


def test_run_interleaved_stops_at_the_row_budget():
    clock = FakeClock()

    def tick():
        clock.now += 1.0

    variants = [bench.Variant("fused", tick), bench.Variant("eager", tick)]
    bench.run_interleaved(variants, reps=100, warmup=1, timer=bench.CpuTimer(clock), budget_s=9.5, min_reps=3,
                          clock=clock)
    assert len(variants[0].times) == len(variants[1].times) == 5  # 2 s per repetition: stop after 10 s > 9.5


# ------------------------------------------------------------------------------------------------ shapes
def test_squeezenet_spatial_sizes_at_224():
    shapes = bench.squeezenet_fire_shapes("squeezenet1_1", 224)
    assert [s.name for s in shapes] == [f"fire{i}" for i in range(2, 10)]
    assert [s.height for s in shapes] == [55, 55, 27, 27, 13, 13, 13, 13]
    assert [(s.inplanes, s.squeeze, s.expand1x1, s.expand3x3) for s in shapes][0] == (64, 16, 64, 64)
    assert [s.height for s in bench.squeezenet_fire_shapes("1_0", 224)] == [54, 54, 54, 27, 27, 27, 27, 13]


@pytest.mark.parametrize("version", ["1_0", "1_1"])
@pytest.mark.parametrize("size", [224, 97])
def test_spatial_sizes_match_a_real_forward(version, size):
    from squeezeae_ext.squeezenet import SqueezeNet, TorchvisionFire

    seen = []
    with torch.device("meta"):
        model = SqueezeNet(version)
    for m in model.modules():
        if isinstance(m, TorchvisionFire):
            m.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape[2:])))
    model(torch.empty(1, 3, size, size, device="meta"))
    assert [(s.height, s.width) for s in bench.squeezenet_fire_shapes(version, size)] == seen


def test_pool_output_size_matches_torch():
    for size in range(3, 40):
        for ceil_mode in (False, True):
            expected = F.max_pool2d(torch.empty(1, 1, size, size, device="meta"), 3, 2, ceil_mode=ceil_mode).shape[-1]
            assert bench.pool_output_size(size, 3, 2, ceil_mode=ceil_mode) == expected
    assert bench.pool_output_size(5, 2, 2, padding=1, ceil_mode=True) == F.max_pool2d(
        torch.empty(1, 1, 5, 5, device="meta"), 2, 2, padding=1, ceil_mode=True).shape[-1]


def test_parse_custom_shapes():
    shapes = bench.parse_shapes("8,4,4,4,7; 16,8,8,8,5,6")
    assert [(s.inplanes, s.squeeze, s.expand1x1, s.expand3x3, s.height, s.width) for s in shapes] == [
        (8, 4, 4, 4, 7, 7), (16, 8, 8, 8, 5, 6)]
    for bad in ("8,4,4", "a,b,c,d,e", "8,4,4,4,0", ";"):
        with pytest.raises(ValueError, match="--shapes"):
            bench.parse_shapes(bad)


def test_short_name():
    assert bench.short_name("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert bench.short_name("AMD EPYC") == "amd-epyc"


# ----------------------------------------------------------------------------------------------- the CLI
ROW_FIELDS = {"op", "name", "shape", "input_shape", "output_shape", "min_bytes", "min_flops", "variants",
              "speedup_vs_eager", "speedup_vs_compiled", "fused_GBps", "fused_GFLOPs", "eager_GBps",
              "eager_GFLOPs", "fused_fraction_of_copy_bw"}
VARIANT_FIELDS = {"ok", "error", "median_ms", "p25_ms", "p75_ms", "iqr_ms", "iqr_rel", "min_ms", "max_ms",
                  "reps", "times_ms", "first_call_s"}
ENV_FIELDS = {"date", "git_revision", "torch", "python", "cpu_model", "cpu_count", "threads", "device",
              "device_name", "cpu_kernels", "cuda_kernels", "squeezeae_ext", "cpu_paths"}


def _bench(tmp_path, *options):
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    rc = main(["bench", "--reps", "3", "--warmup", "1", "--batch", "2", "--threads", "1", "--quiet",
               "--json", str(out), "--markdown", str(md), *options])
    return rc, json.loads(out.read_text()), md.read_text()


def _check_rows(results, op, count):
    assert ENV_FIELDS <= set(results["environment"])
    assert results["config"]["command"].startswith("squeezeae bench")
    assert results["copy_bandwidth"]["GBps"] > 0
    assert {"bytes", "flops"} <= set(results["counting"])
    rows = [r for r in results["rows"] if r["op"] == op]
    assert len(rows) == count
    for r in rows:
        assert ROW_FIELDS <= set(r)
        for name in ("fused", "eager"):
            v = r["variants"][name]
            assert v["ok"], v["error"]
            assert VARIANT_FIELDS <= set(v) and v["reps"] == 3 and len(v["times_ms"]) == 3
            assert v["min_ms"] <= v["median_ms"] <= v["max_ms"]
        assert r["speedup_vs_eager"] == pytest.approx(
            r["variants"]["eager"]["median_ms"] / r["variants"]["fused"]["median_ms"])
        assert r["fused_GBps"] == pytest.approx(r["min_bytes"] / (r["variants"]["fused"]["median_ms"] / 1e3) / 1e9)
    return rows


def test_cli_max_unpool2d_json(tmp_path, capsys):
    rc, results, md = _bench(tmp_path, "--op", "max_unpool2d", "--shapes", "8,4,4,4,7;8,6,6,6,7;16,8,8,8,7")
    assert rc == 0
    rows = _check_rows(results, "max_unpool2d", 2)  # rows depend on (C, H, W) only: the first two merge
    assert rows[0]["input_shape"] == [2, 8, 3, 3] and rows[0]["output_shape"] == [2, 8, 7, 7]
    assert rows[0]["min_bytes"] == bench.max_unpool2d_bytes(2, 8, 3, 3, 7, 7, 4)
    assert rows[0]["min_flops"] is None and rows[0]["fused_GFLOPs"] is None
    assert results["summary"]["all"]["eager"]["rows"] == 2
    stdout = capsys.readouterr().out
    assert "max_unpool2d" in stdout and stdout.strip().splitlines()[-1].startswith("SUMMARY: fused vs eager")
    assert "squeezeae bench --op max_unpool2d" in md and "| op | layer |" in md
    paths = results["environment"]["cpu_paths"]
    assert f"- CPU paths: GEMM {paths['gemm']}, SIMD {paths['simd']}, L2 " in md
    path = str(tmp_path / "bench.json")
    summary = bench.summarize_files([path, path]).splitlines()
    assert summary[0].startswith("max_unpool2d float32") and "copy" in summary[0]
    assert summary[-1].startswith("all files, max_unpool2d fwd: fused vs eager geomean") and "over 4 rows" in summary[-1]


def test_cli_fire_and_unpool_fire_channels_last_backward(tmp_path):
    rc, results, _ = _bench(tmp_path, "--op", "all", "--shapes", "8,4,4,4,7", "--layout", "channels_last",
                            "--backward")
    assert rc == 0, [r["variants"] for r in results["rows"]]
    for op in bench.OPS:
        _check_rows(results, op, 1)
    fire = next(r for r in results["rows"] if r["op"] == "fire")
    assert fire["min_flops"] == bench.fire_flops(2, 8, 4, 4, 4, 7, 7, backward=True)
    assert fire["min_bytes"] == bench.fire_bytes(2, 8, 4, 4, 4, 7, 7, 4, backward=True)
    assert results["config"]["backward"] and results["config"]["layout"] == "channels_last"


def test_cli_failing_variants_are_reported_not_raised(tmp_path, monkeypatch):
    def no_compile(torch, fn):
        raise RuntimeError("inductor unavailable here\nlong trace")

    monkeypatch.setattr(bench, "_compiled", no_compile)
    rc, results, md = _bench(tmp_path, "--op", "fire", "--shapes", "8,4,4,4,5", "--compile")
    assert rc == 0  # a compile failure is an n/a column, not a failed run
    row = results["rows"][0]
    assert row["variants"]["compiled"] == {"ok": False, "error": "RuntimeError: inductor unavailable here",
                                           "first_call_s": None, "compile_s": None}
    assert row["speedup_vs_compiled"] is None and row["variants"]["fused"]["ok"]
    assert "n/a" in md


def test_cli_model_mode(tmp_path):
    rc, results, _ = _bench(tmp_path, "--model", "squeezenet1_1", "--size", "48")
    assert rc == 0
    assert [r["name"] for r in results["rows"]] == ["squeezenet1_1 b1", "squeezenet1_1 b2"]
    for r in results["rows"]:
        assert r["variants"]["fused"]["ok"] and r["variants"]["eager"]["ok"] and r["min_flops"] > 0


def test_cli_model_mode_backward(tmp_path):
    """--model with --backward times a training step's forward and backward of the whole network."""
    rc, results, _ = _bench(tmp_path, "--model", "squeezenet1_1", "--size", "48", "--backward")
    assert rc == 0 and results["config"]["backward"]
    for r, batch in zip(results["rows"], (1, 2)):
        assert r["variants"]["fused"]["ok"] and r["variants"]["eager"]["ok"], r["variants"]
        assert r["min_flops"] == bench.model_flops("squeezenet1_1", batch, 48, backward=True)


def test_model_flops_backward_by_hand():
    """Forward: 2 x MACs of every convolution; forward+backward: + weight gradients of all, data gradients of
    all but the first. At 32x32 input squeezenet1_1's first conv (3->64, 3x3, stride 2) gives 15x15 outputs."""
    forward = bench.model_flops("squeezenet1_1", 1, 32)
    first = 2 * 64 * 15 * 15 * 3 * 9
    assert bench.model_flops("squeezenet1_1", 1, 32, backward=True) == 3 * forward - first


def test_cli_rejects_bad_shapes(capsys):
    assert main(["bench", "--shapes", "1,2,3", "--quiet"]) == 2
    assert "--shapes" in capsys.readouterr().err


def test_cli_restores_the_thread_count(tmp_path):
    before = torch.get_num_threads()
    _bench(tmp_path, "--op", "max_unpool2d", "--shapes", "8,4,4,4,5")  # runs with --threads 1
    assert torch.get_num_threads() == before


def test_cli_closed_pipe_ends_quietly():
    """`squeezeae bench ... | head`: when the reader goes away the command stops with 141 and no traceback."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from squeezeae_ext import cli, info\n"
        "def closed(args):\n"
        "    print('a line the reader never takes')\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "info.run = closed\n"
        "sys.exit(cli.main(['info']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 141
    assert done.stderr == ""
