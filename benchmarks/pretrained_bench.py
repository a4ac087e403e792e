"""``create_model("resnet50", pretrained=True)`` from a warm cache against building the model and loading the
same file by hand; prints JSON.

No network: a ResNet-50 state dict (torchvision's layout and keys, as torch.save writes it) is generated
into a temporary ``$CNNZOO_HOME`` and registered as resnet50's default entry (its SHA-256 pinned), with
``CNNZOO_OFFLINE=1``, so every call below reads that one cached file. Each repetition times, in
alternating order, after a gc:

- ``pretrained``: ``cnnzoo.create_model("resnet50", pretrained=True)`` as a fresh process meets it: the
  process' memo of verified files is cleared first, so the file's digest comes from
  ``$CNNZOO_HOME/verified.json`` (written when the file was downloaded or first hashed, keyed by its size,
  inode, mtime and ctime), then ``torch.load(weights_only=True)``, match the keys, the checked strict load;
- ``pretrained_hashing``: the same with ``verified.json`` removed too, so the run pays the SHA-256 of the
  file (a file torchvision put in torch.hub's cache, the first time cnnzoo meets it);
- ``by_hand``: ``cnnzoo.create_model("resnet50")`` + ``torch.load(path, weights_only=True)``
  (the issue's baseline), and ``by_hand_load``: that + ``model.load_state_dict(state)``.

The target is ``pretrained`` under 1.5x ``by_hand`` (medians; ``_best``: the fastest run of each, the
least disturbed on a busy machine). ``pretrained_memo`` is a second call in the same process (the
file's digest remembered, as in a training script building the model twice).

    .venv/bin/python benchmarks/pretrained_bench.py --repeats 7
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def generate_file(folder: Path) -> tuple[Path, str]:
    """A torchvision-layout ResNet-50 state dict (random weights) and its SHA-256."""
    import torch
    import torchvision

    path = folder / "resnet50-bench.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def timed(run) -> float:
    gc.collect()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnzoo-bench-") as tmp:  # the 100 MB file goes with it
        print(json.dumps(bench(Path(tmp), args.repeats), indent=1))


def bench(home: Path, repeats: int) -> dict:
    for var, sub in (("CNNZOO_HOME", "cnnzoo"), ("TORCH_HOME", "torch"), ("KERAS_HOME", "keras")):
        os.environ[var] = str(home / sub)
    os.environ["CNNZOO_OFFLINE"] = "1"  # proves nothing is fetched: the file must be found in the cache

    import torch

    import cnnzoo
    from cnnzoo import hub

    (home / "cnnzoo" / "weights").mkdir(parents=True)
    path, digest = generate_file(home / "cnnzoo" / "weights")
    entry = cnnzoo.register_pretrained(
        "resnet50", "bench", url="https://example.invalid/resnet50-bench.pth", sha256=digest,
        like="resnet50.IMAGENET1K_V2", default=True,
    )  # fmt: skip
    assert entry.cache_path == path

    def pretrained():
        hub._VERIFIED.clear()
        cnnzoo.create_model("resnet50", pretrained=True)

    def pretrained_hashing():
        hub._VERIFIED.clear()
        (home / "cnnzoo" / hub.STAMPS_FILE).unlink(missing_ok=True)
        cnnzoo.create_model("resnet50", pretrained=True)

    def by_hand():
        cnnzoo.create_model("resnet50")
        torch.load(path, map_location="cpu", weights_only=True)

    def by_hand_load():
        model = cnnzoo.create_model("resnet50")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def pretrained_memo():
        cnnzoo.create_model("resnet50", pretrained=True)

    runs = {
        "pretrained": pretrained,
        "pretrained_hashing": pretrained_hashing,
        "by_hand": by_hand,
        "by_hand_load": by_hand_load,
        "pretrained_memo": pretrained_memo,
    }
    for run in runs.values():  # warm-up: page cache, allocator, lazy imports
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(repeats):
        order = list(runs.items())
        for name, run in order if i % 2 == 0 else order[::-1]:
            times[name].append(timed(run))
    median = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    return {
        "model": "resnet50",
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "repeats": repeats,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "median_s": {name: round(v, 3) for name, v in median.items()},
        "best_s": {name: round(v, 3) for name, v in best.items()},
        "pretrained_vs_by_hand": round(median["pretrained"] / median["by_hand"], 3),
        "pretrained_vs_by_hand_best": round(best["pretrained"] / best["by_hand"], 3),
        "pretrained_hashing_vs_by_hand": round(median["pretrained_hashing"] / median["by_hand"], 3),
        "pretrained_vs_by_hand_load": round(median["pretrained"] / median["by_hand_load"], 3),
        "seconds": {name: [round(t, 3) for t in values] for name, values in times.items()},
    }


if __name__ == "__main__":
    main()
