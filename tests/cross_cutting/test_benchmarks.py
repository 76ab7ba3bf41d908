"""The benchmark scripts run and end with one JSON line of figures (tiny settings: no timing claims).

Width 4 is the case that once hung CI for 300 s: channels_last on a net this narrow corrupts the heap
in oneDNN (see ``backbones.channels_last_safe``), which the benchmark must avoid as the engine does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hallucinator.engine import load_config

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_cost_prints_figures_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    step_cost = load_benchmark("step_cost")
    step_cost.main(["--width", "4", "--shapes", "4x16", "8x8", "--steps", "1", "--warmup", "0", "--threads", "1"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["width"] == 4 and figures["method"] == "simclr" and figures["threads"] == 1
    assert figures["4x16_ms"] > 0 and figures["8x8_pairs_per_s"] > 0


def test_evaluation_speed_times_both_memory_formats(capsys: pytest.CaptureFixture[str]) -> None:
    load_benchmark("evaluation_speed").main(
        ["--extract-only", "--extract-images", "16", "--threads", "1", "--fold-widths", "16"]
    )
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["threads"] == 1 and "knn_s" not in figures
    assert all(figures[f"extract_images_per_s_{name}"] > 0 for name in ("32", "32_channels_last", "bf16"))
    assert figures["forward_w16_images_per_s_plain"] > 0 and figures["fold_speedup_w16"] > 0
    assert "forward_w64_images_per_s_plain" not in figures


def test_precision_parity_trains_both_precisions_and_compares_them(
    cifar10_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = ["--model.width=8", "--batch-size=16", "--data.limit=64", "--trainer.max_steps=2", "--trainer.cpu_threads=1"]
    arguments = [
        "configs/base/small.yaml",
        "--data-dir",
        str(cifar10_archive),
        "--output-dir",
        str(tmp_path),
        "--seeds",
        "0",
        "1",
        "--knn-limit",
        "64",
        "--",
        *tiny,
    ]
    figures = load_benchmark("precision_parity").main(arguments)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(figures))
    for precision in ("32", "bf16"):
        assert len(figures[f"knn_top1_{precision}"]) == 2
        for seed in (0, 1):
            run = tmp_path / f"{precision}_s{seed}"
            config = (run / "config.yaml").read_text()
            assert (
                f"precision: {'32-true' if precision == '32' else 'bf16-mixed'}" in config and f"seed: {seed}" in config
            )
    difference = figures["knn_top1_bf16_mean"] - figures["knn_top1_32_mean"]
    assert figures["knn_top1_difference"] == pytest.approx(difference)
    assert figures["speedup"] == pytest.approx(figures["pairs_per_s_bf16"] / figures["pairs_per_s_32"])
    assert isinstance(figures["within_seed_spread"], bool) and figures["device"].startswith("CPU")
    # finished runs are not trained again: a second call only reads their figures
    mtime = (tmp_path / "32_s0" / "checkpoints" / "last.ckpt").stat().st_mtime
    assert load_benchmark("precision_parity").main(arguments) == figures
    assert (tmp_path / "32_s0" / "checkpoints" / "last.ckpt").stat().st_mtime == mtime


def test_gemm_peak_probe_counts_two_flops_per_multiply_add(monkeypatch: pytest.MonkeyPatch) -> None:
    roofline = load_benchmark("roofline")
    clock = iter(range(1000))  # every perf_counter call is one second later: each matmul "takes" 1 s
    monkeypatch.setattr(roofline.time, "perf_counter", lambda: float(next(clock)))
    assert roofline.gemm_peak_gflops("cpu", "fp32", 64, seconds=0.5) == pytest.approx(2 * 64**3 / 1e9)
    assert roofline.gemm_peak_gflops("cpu", "bf16", 32, seconds=0.5) == pytest.approx(2 * 32**3 / 1e9)
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    products = {name: kernel() for name, kernel in roofline.gemm_kernels(a, b).items()}
    assert set(products) == {"mm", "conv1x1"}  # one product, two libraries: MKL and oneDNN
    for product in products.values():
        torch.testing.assert_close(product, torch.einsum("mk,kn->mn", a, b))


def test_conv_rates_count_a_convolutions_forward_and_both_gradients(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conv_rates = load_benchmark("conv_rates")
    monkeypatch.setattr(
        conv_rates.roofline, "best_seconds", lambda kernel, device, seconds: 2.0
    )  # each step "takes" 2 s
    batch, channels, pixels = 4, 8, 6
    multiply_adds = batch * channels * channels * 9 * pixels * pixels  # one pass of a 3 x 3, stride 1, padding 1 conv
    expected = 3 * 2 * multiply_adds / 2.0 / 1e9  # forward, input gradient, weight gradient; 2 FLOPs each
    assert conv_rates.conv_step_rate(channels, pixels, batch, torch.bfloat16, 0.1) == pytest.approx(expected)
    summary = conv_rates.main(["--width", "2", "--batch-size", "2", "--crop-size", "8", "--seconds", "0.01"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert [(s["channels"], s["pixels"]) for s in summary["stages"]] == [(2, 8), (4, 4), (8, 2), (16, 1)]


def test_data_path_profile_rehearsal_finds_no_host_sync_in_the_data_step(capsys: pytest.CaptureFixture[str]) -> None:
    """The CPU rehearsal of the GPU data path (resident gather + device augmentation): no op that waits for the device."""
    from hallucinator.data import augment

    accelerator_form = augment.avoids_host_sync
    profile = load_benchmark("data_path_profile")
    tiny = [
        "--device",
        "cpu",
        "--synthetic",
        "64",
        "--width",
        "8",
        "--batch-size",
        "16",
        "--steps",
        "1",
        "--precision",
        "32-true",
        "--threads",
        "1",
    ]
    subset = profile.main(tiny)  # the CPU's own form: the counter does see syncs
    assert subset["data_sync_ops"].get("aten::nonzero", 0) > 0 and not subset["rehearse"]
    rehearsed = profile.main([*tiny, "--rehearse"])
    assert augment.avoids_host_sync is accelerator_form  # the rehearsal leaves the CPU form in place
    assert rehearsed["data_sync_ops_per_step"] == 0 and rehearsed["data_sync_ops"] == {}
    # the whole step adds only the Hallucinator's lam, drawn on the CPU: one scalar read per step
    assert rehearsed["step_sync_ops"] == {"aten::_local_scalar_dense": 1}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == rehearsed


def test_merged_kernel_time_counts_overlaps_once() -> None:
    merged = load_benchmark("data_path_profile")._merged_length
    assert merged([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == pytest.approx(4.0)
    assert merged([]) == 0


def test_online_linear_cost_times_both_arms(capsys: pytest.CaptureFixture[str]) -> None:
    figures = load_benchmark("online_linear_cost").main(
        ["--width", "4", "--batch", "8", "--size", "8", "--steps", "2", "--warmup", "0", "--threads", "1"]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures
    assert figures["step_ms_plain"] > 0 and figures["step_ms_probe"] > 0 and figures["threads"] == 1


def test_byte_counter_counts_one_layer_as_a_hand_computation() -> None:
    """Each operation reads its inputs and writes its output once; views move nothing."""
    roofline = load_benchmark("roofline")
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(64, 32), torch.randn(8, 64)
    with roofline.ByteCounter() as counter:
        linear(x)  # addmm(bias, x, weight.t()): the transpose is a view
    assert counter.total == 4 * (32 + 8 * 64 + 32 * 64 + 8 * 32) and set(counter.by_op) == {"aten.addmm"}
    conv, images = torch.nn.Conv2d(3, 8, 3, padding=1), torch.randn(2, 3, 16, 16)
    with roofline.ByteCounter() as counter:
        out = conv(images)
        out.sum().backward()
    forward = 4 * (2 * 3 * 16 * 16 + 8 * 3 * 3 * 3 + 8 + 2 * 8 * 16 * 16)
    assert counter.by_op["aten.convolution"] == forward
    # backward: reads the output's gradient, input and weight; writes the input's (none: images need none),
    # the weight's and the bias's gradients
    grad_out, weight_grad, bias_grad = 2 * 8 * 16 * 16, 8 * 3 * 3 * 3, 8
    assert counter.by_op["aten.convolution_backward"] == 4 * (
        grad_out + 2 * 3 * 16 * 16 + 8 * 27 + weight_grad + bias_grad
    )
    with roofline.ByteCounter() as counter:
        x * x  # one tensor read once
    assert counter.total == 4 * (8 * 64 + 8 * 64)


def test_roofline_is_the_slower_of_compute_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    roofline = load_benchmark("roofline")
    assert roofline.roofline_seconds(2e9, 1e9, peak_gflops=100, bandwidth_gbps=10) == pytest.approx(0.1)  # memory
    assert roofline.roofline_seconds(2e10, 1e8, peak_gflops=100, bandwidth_gbps=10) == pytest.approx(0.2)  # compute
    clock = iter(range(1000))  # every kernel "takes" one second
    monkeypatch.setattr(roofline.time, "perf_counter", lambda: float(next(clock)))
    figures = roofline.memory_bandwidth_gbps("cpu", megabytes=4, seconds=0.5)
    n_bytes = 4 * 2**20
    assert figures == {"copy": pytest.approx(2 * n_bytes / 1e9), "triad": pytest.approx(3 * n_bytes / 1e9)}


def test_step_profile_puts_every_operation_in_one_kind(capsys: pytest.CaptureFixture[str]) -> None:
    profile = load_benchmark("step_profile")
    assert profile.kind_of("aten::convolution_backward", None) == "convolution backward"
    assert profile.kind_of("aten::mkldnn_convolution", None) == "convolution forward"
    assert profile.kind_of("aten::native_batch_norm_backward", None) == "batchnorm"
    assert profile.kind_of("aten::addmm", None) == "matmul" and profile.kind_of("aten::add_", None) == "element-wise"
    assert profile.kind_of("aten::mm", "loss") == "loss"  # a region wins over the operation
    # inductor's kernels (--compile), by name: BatchNorm fused with its ReLU, or other fused element-wise work
    fused_bn = "graph_0_cpp_fused__native_batch_norm_legit_functional_add_copy__relu_threshold_backward_1"
    assert profile.kind_of(fused_bn, None) == "batchnorm (fused)"
    assert profile.kind_of("graph_1_cpp_fused_add_mul_0", None) == "element-wise (fused)"
    arguments = ["--synthetic", "--width", "4", "--batch-size", "8", "--steps", "1", "--warmup", "1", "--threads", "1"]
    figures = profile.main(arguments)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures
    ms = figures["ms_per_step"]
    assert {"augmentation", "hallucinator", "loss", "optimizer", "convolution forward", "convolution backward"} <= set(
        ms
    )
    kinds = sum(value for kind, value in ms.items() if kind != "step")
    assert kinds == pytest.approx(ms["step"], abs=0.05 * ms["step"] + 0.1)  # the rest is python and dispatch


def test_step_profile_builds_each_method_from_its_own_quickstart() -> None:
    profile = load_benchmark("step_profile")
    parser = argparse.ArgumentParser()
    profile.add_step_arguments(parser, batch_size=8, crop_size=16)
    for name, width in (("simclr", ["--width", "4"]), ("mocov2", ["--width", "4"]), ("mocov3_vit", [])):
        pieces = profile.engine_pieces(parser.parse_args(["--method", name, *width]))
        quickstart = load_config(profile.QUICKSTARTS[name]).model
        assert pieces.config.model.method == quickstart.method  # mocov2 with its queue size, not SimCLR's hparams
        assert pieces.config.model.hparams == quickstart.hparams
        assert pieces.config.model.width == (4 if width else quickstart.width)


def test_transfer_step_times_fine_tuning_steps(cifar10_archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_benchmark("transfer_step").main(
        ["--cifar", str(cifar10_archive), "--train-images", "8", "--width", "8", "--batch-size", "4"]
        + ["--steps", "2", "--warmup", "1", "--threads", "1"]
    )
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["steps_timed"] == 2 and figures["batch_size"] == 4 and figures["threads"] == 1
    assert figures["seconds_per_step"] > 0 and figures["cpu_seconds_per_step"] > 0 and figures["cpu"]


def test_augment_overlap_draws_the_same_views_inline_and_on_a_side_thread(capsys: pytest.CaptureFixture[str]) -> None:
    overlap = load_benchmark("augment_overlap")
    arguments = ["--synthetic", "--width", "16", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--rounds", "1"]
    figures = overlap.main([*arguments, "--arms", "inline:1", "overlap:1+1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures
    assert figures["views_identical"] and figures["losses_identical_at_equal_threads"]
    assert figures["max_loss_difference"] == 0.0  # one main thread in both arms: the same step to the bit
    assert figures["inline:1_pairs_per_s"] > 0 and figures["overlap:1+1_ratio"] > 0
    assert figures["inline:1_augment_ms"] > 0 and figures["inline:1_rest_ms"] > 0
    with pytest.raises(SystemExit):
        overlap.main([*arguments, "--arms", "overlap:1"])  # overlap needs the side thread's count


def test_throughput_variants_are_config_overrides_the_engine_accepts() -> None:
    from hallucinator.engine import load_config

    variants = load_benchmark("throughput_variants")
    every = [*variants.BASES, *variants.LEVERS, "batch-512", "threads-1", "compile-method-cl+sgd-fused+batch-128"]
    configs = {name: load_config(None, variants.overrides(name)) for name in every}
    shipped = load_config(None)
    assert configs["eager-cl"] == shipped  # the baseline is the engine as shipped
    assert not configs["eager"].trainer.channels_last and configs["compile-cl"].trainer.compile is True
    assert configs["compile-max-autotune-cl"].trainer.compile == "max-autotune"
    combined = configs["compile-method-cl+sgd-fused+batch-128"]
    assert combined.trainer.compile_scope == "method" and combined.optimizer.implementation == "fused"
    assert combined.data.batch_size == 128 and configs["threads-1"].trainer.cpu_threads == 1
    assert configs["batch-512"].lr() == 4 * combined.lr()  # the lr follows the batch (512 vs 128)
    for bad in ("fast", "batch-0", "eager+compile-cl"):
        with pytest.raises(ValueError, match="unknown variant|chooses the compilation twice"):
            variants.overrides(bad)


def test_throughput_summary_gives_each_variant_its_spread_and_ratio_to_the_baseline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    throughput = load_benchmark("pretrain_throughput")
    args = argparse.Namespace(
        methods=["simclr"],
        widths=[16],
        precisions=["auto"],
        crop_sizes=[32],
        variants=["sgd-fused", "batch-512"],
        baseline="eager-cl",
        lightly_precision="32-true",
        device="cpu",
        batch_size=256,
    )
    run = {"precision": "bf16-mixed", "step_gflop": 100.0, "step_gb": 1.0, "achieved_gflops": 50.0, "peak_rss_mb": 1}
    results = {
        "ours-simclr-w16-auto": [{**run, "pairs_per_s": p, "batch_size": 256} for p in (100, 110, 90)],
        "ours-simclr-w16-auto-sgd-fused": [{**run, "pairs_per_s": p, "batch_size": 256} for p in (120, 125, 95)],
        "ours-simclr-w16-auto-batch-512": [{**run, "pairs_per_s": p, "batch_size": 512} for p in (80, 85, 75)],
    }
    peaks = {"gemm_peak_gflops_bf16": 1000.0, "gemm_peak_gflops_fp32": 250.0, "memory_bandwidth_gbps_triad": 10.0}
    summary = throughput.summarize(results, dict(peaks), args, lightly=False)
    assert summary["ours-simclr-w16-auto-sgd-fused_pairs_per_s"] == 120
    assert summary["ours-simclr-w16-auto-sgd-fused_pairs_per_s_min"] == 95
    assert summary["ours-simclr-w16-auto-sgd-fused_pairs_per_s_max"] == 125
    assert summary["ratio-simclr-w16-auto-sgd-fused"] == pytest.approx(1.2)
    assert summary["ratio-simclr-w16-auto-batch-512"] == pytest.approx(0.8)
    assert "ratio-simclr-w16-auto" not in summary  # the baseline has no ratio to itself
    # the roofline of a run counts its own batch: 1 GB at 10 GB/s is 0.1 s for 256 or for 512 pairs
    assert summary["ours-simclr-w16-auto_roofline_pairs_per_s"] == pytest.approx(2560)
    assert summary["ours-simclr-w16-auto-batch-512_roofline_pairs_per_s"] == pytest.approx(5120)
    throughput.print_table(results, summary)
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[1:] == ["120.0", "95.0-125.0", "25.0%", "1.200"]


def test_throughput_worker_runs_a_combined_variant(
    cifar10_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    throughput = load_benchmark("pretrain_throughput")
    throughput.main(
        ["--worker", "ours", "simclr", "16", "32-true", "--variant", "sgd-fused+batch-32+threads-1"]
        + ["--batch-size", "16", "--steps", "1", "--warmup", "1"]
        + ["--data-dir", str(cifar10_archive), "--output", str(tmp_path)]
    )
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["batch_size"] == 32 and figures["threads"] == 1 and figures["pairs_per_s"] > 0
    config = next(tmp_path.glob("ours-*/config.yaml")).read_text()
    assert "implementation: fused" in config and "batch_size: 32" in config
