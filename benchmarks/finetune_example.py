"""The README's fine-tuning example, end to end: the commands it shows, run, and the accuracies they reach.

    python benchmarks/finetune_example.py /tmp/finetune        # about 3 minutes on 2 CPU cores

Two image folders are written from the 5,000 MNIST digits cnnzoo ships (mnist5k): ``digits0-4`` (its
training digits 0-4, 400 a class, and the held-out ones, 100 a class) and ``digits5-9`` (only 20 training
digits of each of 5-9, and the 100 held-out ones of each). Then, with ``cnnzoo train``:

1. LeNet-5 on digits0-4 (the task the backbone learns);
2. on digits5-9 from those weights with ``--freeze-backbone``: only the classifier trains;
3. from 2, everything unfrozen at a tenth of the learning rate;
4. for comparison, LeNet-5 on digits5-9 from scratch for as many epochs as 2 and 3 together.

It prints each command and a Markdown table of the held-out accuracies (the last epoch's).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from torchvision.io import write_png

FOLDER = ["--scale-jitter", "28,32", "--train-crop-size", "28", "--workers", "0", "--no-progress"]


def digit_folder(root: Path, digits: range, train_per_class: int, val_per_class: int) -> Path:
    """mnist5k's ``digits`` as an ImageNet-layout folder of PNGs: train/ from its training split, val/ held out."""
    from cnnzoo.data import load_data

    splits = load_data("mnist5k")
    for split, data, n in (("train", splits.train, train_per_class), ("val", splits.test, val_per_class)):
        for d in digits:
            folder = root / split / f"digit{d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(torch.nonzero(data.labels == d).flatten()[:n].tolist()):
                write_png(data.images[index], str(folder / f"{i}.png"))
    return root


def run(*args: str) -> float:
    """``cnnzoo ARGS``, echoed; the held-out accuracy of its last epoch."""
    print("$ cnnzoo " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run([sys.executable, "-m", "cnnzoo", *args], check=True, stdout=subprocess.DEVNULL)
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["test_acc"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path, help="where the two folders and the four run folders go")
    root = p.parse_args().root
    a = digit_folder(root / "digits0-4", range(5), 400, 100)
    b = digit_folder(root / "digits5-9", range(5, 10), 20, 100)
    runs = root / "runs"
    rows = [
        ("LeNet-5 on digits0-4 (2,000 images), 10 epochs", run("train", "lenet5", "--data", f"folder:{a}", "--epochs", "10", "--batch-size", "32", "--lr", "0.03", "--out", str(runs / "digits0-4"), *FOLDER)),
        ("digits5-9 (100 images), --freeze-backbone, 15 epochs", run("train", "lenet5", "--data", f"folder:{b}", "--weights", str(runs / "digits0-4"), "--freeze-backbone", "--epochs", "15", "--batch-size", "20", "--lr", "0.05", "--out", str(runs / "frozen"), *FOLDER)),
        ("then unfrozen, --lr 0.005, 15 epochs", run("train", "lenet5", "--data", f"folder:{b}", "--weights", str(runs / "frozen"), "--epochs", "15", "--batch-size", "20", "--lr", "0.005", "--out", str(runs / "unfrozen"), *FOLDER)),
        ("digits5-9 from scratch, 30 epochs", run("train", "lenet5", "--data", f"folder:{b}", "--epochs", "30", "--batch-size", "20", "--lr", "0.05", "--out", str(runs / "scratch"), *FOLDER)),
    ]  # fmt: skip
    print("\n| run | held-out accuracy |\n|---|---:|")
    for name, acc in rows:
        print(f"| {name} | {acc:.1%} |")


if __name__ == "__main__":
    main()
