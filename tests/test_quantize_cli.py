"""INT8 from the command line and the fast path: export --quantize int8, eval / predict of .onnx files,
bench --precision int8, and optimize_for_inference(precision="int8").

One LeNet-5 is trained for the module (3 epochs on 1,000 real MNIST digits written as IDX files), so that
the INT8 model is held to a trained fp32 model on held-out digits, not to a random network's logits.
"""

import contextlib
import io
import json
import re

import numpy as np
import onnx
import pytest
import torch

import cnnzoo
from cnnzoo import quantize as q
from cnnzoo.bench import benchmark
from cnnzoo.cli import main
from cnnzoo.data import load_data
from cnnzoo.export import OnnxModel
from cnnzoo.fast import optimize_for_inference
from cnnzoo.predict import evaluate_checkpoint

from .data_fixtures import write_idx, write_png

N_TRAIN, N_TEST = 1000, 200


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A LeNet-5 run folder trained on a random 1,000 / 200 subset of mnist5k (all ten digits in both splits)."""
    from cnnzoo.train import TrainConfig, train

    root = tmp_path_factory.mktemp("int8cli")
    digits = load_data("mnist5k")
    folder = root / "mnist"
    folder.mkdir()
    for split, name, n in ((digits.train, "train", N_TRAIN), (digits.test, "t10k", N_TEST)):
        pick = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n]
        write_idx(folder / f"{name}-images-idx3-ubyte", split.images[pick, 0].numpy().astype(np.uint8))
        write_idx(folder / f"{name}-labels-idx1-ubyte", split.labels[pick].numpy().astype(np.uint8))
    out = root / "run"
    # 3 epochs of batch 16 at lr 0.03: about 95% held-out in a few seconds (lenet5's own lr 0.1 diverges on 1,000 digits).
    config = dict(epochs=3, batch_size=16, lr=0.03)
    train(TrainConfig(model="lenet5", data=f"mnist:{folder}", out=str(out), progress=False, **config))
    return out


@pytest.fixture(scope="module")
def int8_export(run, tmp_path_factory):
    """`cnnzoo export RUN --quantize int8`: the file and what the command printed (capsys is per test)."""
    out = tmp_path_factory.mktemp("int8out") / "lenet5.int8.onnx"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = main(["export", str(run), "--quantize", "int8", "--calibration-images", "128", "--out", str(out)])
    assert code == 0
    return out, text.getvalue()


def printed_top1(text: str) -> tuple[float, float]:
    """(fp32, int8) top-1 in percent from the check line export --quantize prints."""
    fp32, int8 = re.search(r"top-1 fp32 ([\d.]+)%, int8 ([\d.]+)%", text).groups()
    return float(fp32), float(int8)


def pytorch_top1(run) -> float:
    """The trained fp32 PyTorch model's top-1 on the run's held-out digits (the reference)."""
    model = cnnzoo.load_model(run).eval()
    images, labels = q.held_out_batch(run)
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).double().mean())


def test_export_quantize_writes_int8_and_prints_the_check_before_done(run, int8_export):
    out, text = int8_export
    lines = text.splitlines()
    check = next(i for i, line in enumerate(lines) if line.startswith(f"INT8 check on {N_TEST} held-out images"))
    done = next(i for i, line in enumerate(lines) if line.startswith("done: wrote"))
    assert check < done == len(lines) - 1 and str(out) in lines[done]
    assert "minmax calibration on 128 images" in text and "5/5 conv and matmul layers int8" in text

    # The printed fp32 top-1 is the PyTorch model's on the same held-out digits; INT8 loses at most a point.
    fp32, int8 = printed_top1(lines[check])
    assert fp32 == pytest.approx(100 * pytorch_top1(run), abs=0.01)
    assert fp32 > 85 and fp32 - int8 <= 1.0

    served = OnnxModel(out)
    assert served.model_name == "lenet5" and served.classes == [str(i) for i in range(10)]
    assert served.metadata["quantization"]["calibration_images"] == 128
    assert served.metadata["data"].startswith("mnist:/")  # the run's data, absolute: eval of the file finds it
    assert {n.op_type for n in onnx.load(str(out)).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}


def test_eval_and_predict_read_onnx_files(run, int8_export, tmp_path, capsys):
    out, text = int8_export
    int8 = evaluate_checkpoint(str(out), workers=0)  # the data: the run's, from the file's metadata
    printed = printed_top1(text)[1]
    assert int8["count"] == N_TEST and 100 * int8["top1"] == pytest.approx(printed, abs=0.01)
    assert any("INT8 (QDQ, minmax calibration) ONNX" in note for note in int8["notes"])

    fp32_file = tmp_path / "lenet5.onnx"
    assert main(["export", str(run), "--out", str(fp32_file), "--dynamic-batch"]) == 0
    fp32 = evaluate_checkpoint(str(fp32_file), workers=0)
    assert fp32["top1"] == pytest.approx(pytorch_top1(run), abs=1e-9) and fp32["classes"] == int8["classes"]
    capsys.readouterr()
    assert main(["eval", str(out), "--workers", "0"]) == 0
    assert "lenet5 on mnist:" in capsys.readouterr().out

    # predict: the INT8 file names the digit the PyTorch run folder names, for held-out digits written as PNGs.
    digits = load_data(json.loads((run / "config.json").read_text())["data"]).test.images[:4]
    files = [str(write_png(tmp_path / f"{i}.png", image.permute(1, 2, 0).numpy())) for i, image in enumerate(digits)]
    top = {}
    for source in (run, out):
        capsys.readouterr()
        assert main(["predict", str(source), *files, "--topk", "1", "--json"]) == 0
        top[source] = [r["top"][0][0] for r in json.loads(capsys.readouterr().out)]
    assert top[out] == top[run]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--quantize", "int4"], "argument --quantize: invalid choice: 'int4'"),
        (["--quantize", "int8", "--calibration-images", "0"], "argument --calibration-images: expected a positive"),
        (["--quantize", "int8", "--format", "torchscript"], "--quantize int8 writes an ONNX file"),
        (["--calibrate", "mnist5k"], "--calibrate and --calibration-images go with --quantize int8"),
        (["--quantize", "int8", "--calibrate", "nothing:here"], "unknown data spec 'nothing:here'"),
    ],
)
def test_bad_quantize_options_exit_2_in_one_line_writing_nothing(run, tmp_path, capsys, argv, says):
    out = tmp_path / "x.onnx"
    try:
        code = main(["export", str(run), *argv, "--out", str(out)])
    except SystemExit as e:  # argparse refuses while reading the command line
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert says in err.splitlines()[0] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_model_name_needs_calibration_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "resnet18", "--pretrained", "--quantize", "int8"]) == 2  # refused before any download
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "give --calibrate DATA_SPEC" in err
    assert list(tmp_path.iterdir()) == []


def test_optimize_for_inference_int8_follows_the_trained_fp32_model(run):
    model = cnnzoo.load_model(run).eval()
    fast = optimize_for_inference(model, precision="int8", calibration=q.calibration_batch(run, 64))
    images, labels = q.held_out_batch(run)
    with torch.no_grad():
        want = model(images)
    got = fast(images)
    assert fast.precision == "int8" and fast.quantize_report.quantized_ops == 5
    assert q.centred_cosine(want, got) > 0.99
    assert float((want.argmax(1) == got.argmax(1)).double().mean()) >= 0.97
    with pytest.raises(ValueError, match="calibrated on 1x28x28 images; got 1x32x32"):
        fast(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="precision='int8' needs calibration="):
        optimize_for_inference(model, precision="int8")
    with pytest.raises(ValueError, match="onnxruntime back end"):
        optimize_for_inference(model, precision="int8", backend="eager", calibration=images)


def test_bench_int8_against_torchvision_fp32(capsys):
    argv = ["bench", "resnet18", "--precision", "int8", "--device", "cpu", "--vs", "torchvision", "--input", "32"]
    assert main([*argv, "--batch-size", "2", "--rounds", "2", "--iters", "2", "--warmup", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    ours, theirs = r["results"]
    assert "int8 QDQ (21/21 layers" in ours["recipe"] and "onnxruntime" in ours["recipe"]
    assert (
        theirs["library"] == "torchvision"
        and theirs["recipe"].startswith("infer, fp32")
        and "eager" in theirs["recipe"]
    )
    ratio = r["ratios"]["torchvision"]
    per_round = [a / b for a, b in zip(ours["images_per_s_per_round"], theirs["images_per_s_per_round"], strict=True)]
    assert ratio["per_round"] == pytest.approx(per_round) and ratio["median"] == pytest.approx(
        float(np.median(per_round))
    )
    assert "random images" in r["settings"]["int8"] and r["settings"]["precision"] == "int8"


@pytest.mark.parametrize(
    "kwargs, says",
    [
        (dict(mode="train"), "int8 is for inference only"),
        (dict(fast=False), "leave --plain and --backend out"),
        (dict(backend="inductor"), "leave --plain and --backend out"),
    ],
)
def test_bench_int8_refuses_what_it_cannot_do(kwargs, says):
    with pytest.raises(ValueError, match=says):
        benchmark("lenet5", precision="int8", device="cpu", **kwargs)
