"""The benchmark scripts run end to end on tiny data, printing their command and a sound table.

Nothing here judges speed (that is what the scripts are for); these tests keep the scripts from
rotting as the code under them changes, and check the quantities they count. One test a script
runs in the default suite; the others are opt-in (`-m bench`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from tests.conftest import ROOT, TINY_SPLIT_SIZES, run_script

TINY_DATA = ("--", "data.cache_dir=null")


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of the markdown table rows, header and rule left out."""
    rows = [line.strip().strip("|").split("|") for line in stdout.splitlines() if line[:1] == "|"]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def number(cell: str) -> float:
    return float(cell.strip("*x").replace(",", ""))


def assert_ratio_of_rounded(
    ratio: float, numerator: float, denominator: float, half_unit: float, half_ratio_unit: float
) -> None:
    """``ratio`` (printed to +-half_ratio_unit) is numerator / denominator of the unrounded
    values behind two numbers printed to +-half_unit."""
    lowest = (numerator - half_unit) / (denominator + half_unit)
    highest = (numerator + half_unit) / max(denominator - half_unit, 1e-12)
    assert lowest - half_ratio_unit <= ratio <= highest + half_ratio_unit, (
        ratio,
        numerator,
        denominator,
    )


def run_benchmark(name: str, *args: str) -> str:
    result = run_script(f"benchmarks/{name}", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(  # the command that made the numbers, as the script was called
        line.startswith("`python ") and f"benchmarks/{name} " in line
        for line in result.stdout.splitlines()
    )
    return result.stdout


def test_bench_epoch_times_every_epoch_of_the_full_training_split(tiny_csv: Path) -> None:
    out = run_benchmark(
        "bench_epoch.py",
        *("--csv", str(tiny_csv), "--experiment", "baseline_fer2013", "--epochs", "3"),
        *TINY_DATA,
    )
    assert f"{TINY_SPLIT_SIZES['num_train']} training images per epoch" in out
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["1 (warm-up)", "2", "3", "**median of epochs 2-3**"]
    for _, wall, validation, rate in rows:
        assert number(wall) > number(validation) > 0
        assert number(rate) > 0
    assert number(rows[-1][1]) == pytest.approx(
        (number(rows[1][1]) + number(rows[2][1])) / 2, abs=0.011
    )


@pytest.mark.bench
def test_bench_epoch_refuses_a_single_epoch(tiny_csv: Path) -> None:
    result = run_script("benchmarks/bench_epoch.py", "--csv", str(tiny_csv), "--epochs", "1")
    assert result.returncode == 2
    assert "--epochs must be at least 2" in result.stderr


def test_bench_train_loop_compares_both_loops(tiny_csv: Path) -> None:
    out = run_benchmark(
        "bench_train_loop.py",
        *("--csv", str(tiny_csv), "--batch-size", "8", "--warmup", "2"),
        *("--blocks", "2", "--block", "5", "--settle", "1"),
        *TINY_DATA,
    )
    rates = {row[0]: row[1] for row in table_rows(out)}
    bare = number(rates["bare forward+backward+step"])
    real = number(rates["train.py (augmentation, loader, metrics, logging)"])
    # the ratio is of the unrounded rates; the printed rates are whole images/s
    assert_ratio_of_rounded(number(rates["ratio train.py / bare"]), real, bare, 0.5, 0.005)
    assert "2 interleaved pairs of 5-step blocks" in out


@pytest.mark.bench
def test_bench_train_loop_runs_both_loops_in_bf16(tiny_csv: Path) -> None:
    out = run_benchmark(
        "bench_train_loop.py",
        *("--csv", str(tiny_csv), "--batch-size", "8", "--warmup", "2"),
        *("--blocks", "1", "--block", "3", "--settle", "1"),
        *TINY_DATA,
        *("trainer.precision=bf16-mixed", "model.channels_last=true"),
    )
    assert "precision bf16-mixed" in out
    rates = {row[0]: row[1] for row in table_rows(out)}
    assert number(rates["bare forward+backward+step"]) > 0
    assert number(rates["train.py (augmentation, loader, metrics, logging)"]) > 0


def test_bench_parse_times_the_reference_loop_and_ours(tiny_csv: Path) -> None:
    out = run_benchmark(
        "bench_parse.py", "--csv", str(tiny_csv), "--repeats", "1", "--reference-repeats", "1"
    )
    rows = table_rows(out)
    assert [row[0] for row in rows] == [
        "reference: pandas read_csv + per-row np.fromstring",
        "ours, cold (no cache)",
        "ours, warm (from the .npz cache)",
        "ours, warm, if keyed by a content hash",
    ]
    reference_time = number(rows[0][1])
    for _, seconds, speed_up in rows:  # the reference's time over the row's (printed to 1 ms)
        assert_ratio_of_rounded(number(speed_up), reference_time, number(seconds), 0.0005, 0.05)


def test_bench_inference_rates_every_model_and_batch_size() -> None:
    out = run_benchmark(
        "bench_inference.py",
        *("--models", "baseline", "--batch-sizes", "1", "4", "--warmup", "1", "--repeats", "2"),
    )
    (row,) = table_rows(out)
    assert row[:2] == ["baseline", "318,407"]
    assert len(row) == 4 and all(number(rate) > 0 for rate in row[2:])


def test_bench_precision_rates_every_setting_against_fp32() -> None:
    out = run_benchmark(
        "bench_precision.py",
        *("--models", "baseline", "--batch-size", "4", "--batches", "2"),
        *("--warmup", "0", "--rounds", "2", "--steps", "1"),
    )
    rows = table_rows(out)
    assert [row[:2] for row in rows] == [
        ["baseline", "fp32"],
        ["baseline", "fp32 + channels_last"],
        ["baseline", "bf16-mixed"],
        ["baseline", "bf16-mixed + channels_last"],
    ]
    assert number(rows[0][3]) == 1.0
    for _, _, rate, speed_up in rows:  # speed-up is the rate over fp32's unrounded rate
        # rates are printed to whole images/s, which at a few images/s moves their ratio a lot
        assert_ratio_of_rounded(number(speed_up), number(rate), number(rows[0][2]), 0.5, 0.005)


def test_bench_ema_times_both_averages_of_every_net() -> None:
    out = run_benchmark("bench_ema.py", "--models", "baseline", "--rounds", "2", "--updates", "1")
    rows = table_rows(out)
    # 5 conv/linear weights and biases, and the system's loss-weight buffer
    assert [row[:2] for row in rows] == [["baseline", "11"]]
    _, _, per_tensor, fused, speed_up = rows[0]
    assert number(per_tensor) > 0 and number(fused) > 0
    # the speed-up is the ratio of the unrounded times; the printed times are rounded to 0.01 ms
    assert_ratio_of_rounded(number(speed_up), number(per_tensor), number(fused), 0.005, 0.005)


def test_profile_steps_records_whole_training_steps(tiny_csv: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    out = run_benchmark(
        "profile_steps.py",
        *("--csv", str(tiny_csv), "--experiment", "baseline_fer2013"),
        *("--skip", "2", "--steps", "4", "--rows", "40", "--trace", str(trace)),
        *(*TINY_DATA, "data.batch_size=32"),
    )
    assert "steps 3-6 of the first epoch; cpu" in out
    values = {row[0]: number(row[1]) for row in table_rows(out)}
    assert values["wall ms"] > 0 and values["aten op calls (nested ones too)"] > 0
    # the recorded window holds 4 whole steps: each one's batch augmentation (one grid_sample),
    # backward through the baseline's 3 convolutions and the optimizer's update
    expected = {
        "aten::grid_sampler_2d": "4",
        "aten::convolution_backward": "12",
        "Optimizer.step#AdamW.step": "4",
    }
    for op, count in expected.items():
        calls = [line.split()[-1] for line in out.splitlines() if line.strip().startswith(op + " ")]
        assert calls == [count], (op, calls)
    events = {event.get("name") for event in json.loads(trace.read_text())["traceEvents"]}
    assert "aten::convolution_backward" in events


@pytest.mark.bench
def test_profile_steps_counts_each_kernel_once_in_the_device_time() -> None:
    # the profiler credits a kernel's time to its own event and to the op that launched it
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from profile_steps import device_busy_us

    def event(device_type: DeviceType, microseconds: float, annotation: bool = False):
        return SimpleNamespace(
            device_type=device_type,
            self_device_time_total=microseconds,
            is_user_annotation=annotation,
        )

    launcher, kernel = event(DeviceType.CPU, 100.0), event(DeviceType.CUDA, 100.0)
    assert device_busy_us([launcher, kernel, event(DeviceType.CUDA, 7.0, annotation=True)]) == 100


@pytest.mark.bench
def test_profile_steps_needs_enough_steps(tiny_csv: Path) -> None:
    result = run_script(
        "benchmarks/profile_steps.py",
        *("--csv", str(tiny_csv), "--experiment", "baseline_fer2013", "--skip", "50"),
        *(*TINY_DATA, "data.batch_size=32"),
    )
    assert result.returncode == 1
    assert "the run had fewer than 70 training steps" in result.stderr


def _side_by_side(tiny_csv: Path, *options: str) -> list[list[str]]:
    out = run_benchmark(
        "bench_vs_keras.py",
        *("--csv", str(tiny_csv), "--epochs", "2", "--train-batches", "2", *options),
        *TINY_DATA,
    )
    assert f"{2 * 64} training and {TINY_SPLIT_SIZES['num_val']} validation images" in out
    rows = table_rows(out)
    for _, train_rate, val_rate, _, _, accuracy in rows:
        assert number(train_rate) > 0 and number(val_rate) > 0
        assert 0.0 <= number(accuracy) <= 1.0
    reference = rows[0]  # the first side is the one the ratios divide by
    assert number(reference[3]) == number(reference[4]) == 1.0
    for row in rows[1:]:
        for rate, ratio in ((1, 3), (2, 4)):
            assert_ratio_of_rounded(
                number(row[ratio]), number(row[rate]), number(reference[rate]), 0.5, 0.005
            )
    return rows


def test_bench_vs_keras_times_the_pytorch_sides_interleaved(tiny_csv: Path) -> None:
    rows = _side_by_side(tiny_csv, "--no-keras")
    assert [row[0] for row in rows] == ["bare PyTorch", "train.py"]


def test_bench_vs_keras_times_keras_first(tiny_csv: Path) -> None:
    """Runs where the benchmark-only extra (`pip install -e '.[keras]'`) is installed."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    rows = _side_by_side(tiny_csv, "--precision", "bf16")
    assert [row[0] for row in rows] == ["Keras", "train.py", "bare PyTorch"]


def test_bench_cpu_settings_times_each_setting_at_each_eval_batch_size() -> None:
    out = run_benchmark(
        "bench_cpu_settings.py",
        *("--rounds", "2", "--steps", "2", "--batch-size", "4", "--eval-images", "8"),
        *("--eval-batch-sizes", "4", "8", "--settings", "eager", "channels last"),
    )
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["eager", "channels last"]
    for row in rows:
        assert len(row) == 5 and all(number(cell) > 0 for cell in row[1:4])


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium")
def test_bench_serve_times_photos_the_webcam_and_a_load_test() -> None:
    pytest.importorskip("playwright.sync_api")
    model = "pretrained:baseline"
    out = run_benchmark(
        "bench_serve.py",
        *("--default-model", model, "--models", model, "--warmup", "1", "--requests", "2"),
        *("--webcam-models", model, "--webcam-warmup", "1", "--webcam-seconds", "1"),
        *("--webcam-rounds", "1"),
        *("--clients", "2", "--load-seconds", "1"),
    )
    photo, webcam, load = (table_rows(table) for table in out.split("\n\n")[1::2])
    # the model with its own TTA (flip) and with none
    assert [row[:2] for row in photo] == [[model, "flip (own)"], [model, "none"]]
    for _, _, p50, p95 in photo:
        assert 0 < number(p50) <= number(p95)
    assert [row[:2] for row in webcam] == [[model, "flip (own)"], [model, "none"]]
    for _, _, rate, p50, p95, faced in webcam:
        answered, frames = (int(count) for count in faced.split("/"))
        assert frames >= 2 and answered == frames  # the face is found in every frame
        assert number(rate) > 0 and 0 < number(p50) <= number(p95)
    ((clients, requests, rate, p50, p95, errors, before, after),) = load
    assert clients == "2" and number(requests) > 0 and errors == "0"
    assert number(rate) > 0 and 0 < number(p50) <= number(p95)
    assert number(before) > 100 and number(after) > 100  # MB of a server holding torch
