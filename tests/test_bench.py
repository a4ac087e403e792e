"""The benchmark's API, CLI and GPU script, at tiny sizes. Structure and sanity only: speed is never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg

from cnnzoo.bench import benchmark, benchmark_data
from cnnzoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    rounds=2, iters=1, warmup=1, backend="eager"
)  # one step per round: fast, and enough to check the bookkeeping


pytestmark = pytest.mark.usefixtures("one_thread")


def _has_timm() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def test_benchmark_result_has_every_figure():
    r = benchmark("lenet5", batch_size=4, vs=["torchvision"], **TINY)
    assert r["settings"]["model"] == "lenet5" and r["settings"]["device"] == "cpu"
    assert r["settings"]["macs_per_image"] == 416_520  # conv1 117,600 + conv2 240,000 + fc 58,920
    assert r["skipped"] == {"torchvision": "torchvision has no lenet5"} and r["ratios"] == {}
    assert {"date", "cpu", "torch", "torchvision", "torch_threads", "load_average", "max_rss_mb"} <= set(r["env"])
    (c,) = r["results"]
    assert c["library"] == "cnnzoo" and "eager" in c["recipe"]
    assert len(c["images_per_s_per_round"]) == 2 and c["images_per_s"] > 0
    assert 0 < c["latency_ms"]["p50"] <= c["latency_ms"]["p90"]
    # Achieved TFLOP/s follow from the rate and the MACs: 2 FLOPs per MAC in inference.
    assert c["tflops"] == pytest.approx(c["images_per_s"] * 2 * 416_520 / 1e12)
    assert c["peak_memory_mb"] > 0.2  # LeNet's weights alone are 0.24 MB
    assert c["first_call_s"] > 0 and c["warmup_s"] >= c["first_call_s"]


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_benchmark_against_torchvision_and_timm_gives_ratios(mode):
    vs = ["torchvision", "timm"]
    r = benchmark("resnet18", mode=mode, batch_size=2, input_size=32, vs=vs, **TINY)
    libraries = [c["library"] for c in r["results"]]
    assert libraries == ["cnnzoo", "torchvision"] + (["timm"] if _has_timm() else [])
    for other in libraries[1:]:
        q = r["ratios"][other]
        per_round = [
            a / b
            for a, b in zip(
                r["results"][0]["images_per_s_per_round"],
                r["results"][libraries.index(other)]["images_per_s_per_round"],
            )
        ]
        assert q["per_round"] == pytest.approx(per_round)
        assert q["min"] <= q["q1"] <= q["median"] <= q["q3"] <= q["max"]
    if mode == "train":
        assert all("SGD" in c["recipe"] for c in r["results"])
        # A training step holds weights, gradients and momentum: at least 3x the 11.7M float32 weights.
        assert all(c["peak_memory_mb"] > 3 * 11.6e6 * 4 / 2**20 for c in r["results"])
        assert r["results"][0]["tflops"] == pytest.approx(
            r["results"][0]["images_per_s"] * 6 * r["settings"]["macs_per_image"] / 1e12
        )


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_benchmark_cpu_layouts_default_to_each_librarys_own(mode):
    r = benchmark("resnet18", mode=mode, batch_size=2, input_size=32, vs=["torchvision"], **TINY)
    ours, theirs = r["results"]
    assert "channels_last" in ours["recipe"] and "channels_last" not in theirs["recipe"]
    r = benchmark("resnet18", mode=mode, batch_size=2, input_size=32, vs=["torchvision"], channels_last=True, **TINY)
    assert all("channels_last" in c["recipe"] for c in r["results"])
    r = benchmark("resnet18", mode=mode, batch_size=2, input_size=32, fast=False, **TINY)
    assert "channels_last" not in r["results"][0]["recipe"]


def test_benchmark_refuses_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        benchmark("lenet5", mode="serve")
    with pytest.raises(ValueError, match="--vs"):
        benchmark("lenet5", vs=["keras"])
    with pytest.raises(ValueError, match="bf16"):
        benchmark("lenet5", mode="train", precision="fp16")


def test_benchmark_data_in_memory():
    r = benchmark_data("synthetic:64:3x32x32", batch_size=16, device="cpu", batches=3)
    assert r["images_per_s"] > 0 and r["first_batch_s"] > 0
    assert r["settings"]["image_size"] == 32 and "in memory" in r["settings"]["pipeline"]


def _jpeg_folder(root: Path, n: int = 4, side: int = 40) -> Path:
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8)
                (root / split / c / f"{i}.jpg").write_bytes(encode_jpeg(img).numpy().tobytes())
    return root


def test_benchmark_data_folder_decodes_and_crops(tmp_path):
    r = benchmark_data(
        f"folder:{_jpeg_folder(tmp_path)}", batch_size=4, device="cpu", image_size=32, workers=0, batches=2
    )
    assert r["images_per_s"] > 0 and r["settings"]["image_size"] == 32 and "decode" in r["settings"]["pipeline"]


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def test_cli_bench_json(capsys):
    assert main(["bench", "resnet18", "--input", "32", "--batch-size", "2", "--vs", "torchvision", "--rounds", "2", "--iters", "1",
                 "--warmup", "1", "--backend", "eager", "--json"]) == 0  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    assert [c["library"] for c in r["results"]] == ["cnnzoo", "torchvision"] and "torchvision" in r["ratios"]


def test_cli_bench_table(capsys):
    assert (
        main(
            [
                "bench",
                "lenet5",
                "--batch-size",
                "4",
                "--rounds",
                "2",
                "--iters",
                "1",
                "--warmup",
                "1",
                "--backend",
                "eager",
                "--plain",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "lenet5 infer" in out and "cnnzoo" in out and "img/s" in out and "eager" in out and "BN folded" not in out


def test_cli_bench_data_and_errors(capsys):
    assert (
        main(["bench", "--data", "synthetic:32:3x32x32", "--batch-size", "8", "--batches", "2", "--device", "cpu"]) == 0
    )
    assert "images/s" in capsys.readouterr().out
    assert main(["bench"]) == 2
    assert "give a MODEL" in capsys.readouterr().err
    assert main(["bench", "lenet5", "--input", "big"]) == 2


# --------------------------------------------------------------------------------------------------
# The GPU script runs (tiny, on the CPU) and writes its JSON
# --------------------------------------------------------------------------------------------------


def test_gpu_script_smoke(tmp_path):
    jobs = [
        "resnet18-infer-eager",
        "lenet5-train-eager",
        "profile-resnet50",
        "jpeg-pipeline",
        "gpu-tests",
        "train-folder-e2e",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--smoke", "--out", str(tmp_path), "--only", *jobs],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},  # see the one_thread fixture in conftest.py
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["smoke"] and set(report["jobs"]) == set(jobs)
    assert all("error" not in v for v in report["jobs"].values()), {
        k: v.get("error") for k, v in report["jobs"].items()
    }
    assert "torchvision" in report["jobs"]["resnet18-infer-eager"]["ratios"]
    pipeline = report["jobs"]["jpeg-pipeline"]
    assert pipeline["workers"]["images_per_s"] > 0 and pipeline["device"]["settings"]["decode"] == "device"
    assert report["jobs"]["gpu-tests"]["returncode"] == 0 and "cuda" in (tmp_path / "gpu_tests.txt").read_text()
    e2e = report["jobs"]["train-folder-e2e"]
    assert [e["epoch"] for e in e2e["epochs"]] == [1, 2] and e2e["checkpoint_files"]
    assert (tmp_path / "profile_resnet50_train.txt").read_text().startswith("resnet50 train")
