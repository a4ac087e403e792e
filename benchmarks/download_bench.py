"""Download speed of cnnzoo.hub against a plain copy of the same HTTP response; prints JSON.

The server (tests/loopback.py) runs in its own process and serves a generated file from memory over
127.0.0.1. Each repetition times, in alternating order:

- ``copy``: ``urllib.request.urlopen`` + ``shutil.copyfileobj`` into a file (no hashing, no checks);
- ``hub``: ``cnnzoo.hub.download_url`` into an empty cache: streamed to ``.partial`` while hashed
  (SHA-256), verified, renamed into place (what users get). ``hub_on_disk_mb_s`` also counts the
  background fsync and stamp, which the caller does not wait for (the copy has neither).

The target is ``hub`` at >= 90% of ``copy``'s throughput (medians; ``_best`` compares the fastest run
of each, the least disturbed on a busy machine). ``sha256_mb_s`` is hashlib's
speed alone on this machine: hashing in series would cap ``hub`` near ``1 / (1/copy + 1/sha256)``.

    .venv/bin/python benchmarks/download_bench.py --size-mb 100 --repeats 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_hub():
    """cnnzoo.hub without the package's __init__ (which imports torch): the download path needs none of it."""
    package = types.ModuleType("cnnzoo")
    package.__path__ = [str(ROOT / "src" / "cnnzoo")]
    sys.modules.setdefault("cnnzoo", package)
    from cnnzoo import hub

    return hub


def start_server(size: int) -> tuple[subprocess.Popen, dict]:
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "loopback.py"), "--size", str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return server, json.loads(server.stdout.readline())


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process so far (Linux /proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def forget_file(path: Path) -> None:
    """Delete a run's output, and commit the deletion before the next run starts.

    Freeing blocks that reached the disk (the hub's file is fsynced, the copy's is usually still only in
    memory) makes ext4 discard them at its next journal commit, which otherwise falls inside the next
    timed run and slows it by up to 25% (measured on this machine, mounted with ``discard``).
    """
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def time_copy(url: str, folder: Path) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response, open(folder / "copy.bin", "wb") as out:
        shutil.copyfileobj(response, out)
    elapsed = time.perf_counter() - start
    forget_file(folder / "copy.bin")
    return elapsed


def time_hub(hub, url: str, digest: str, folder: Path, on_disk: list[float]) -> float:
    """Seconds until download_url returns; appends to ``on_disk`` the seconds until the file is also
    fsynced and stamped (the background thread :func:`cnnzoo.hub.settle` waits for)."""
    os.environ["CNNZOO_HOME"] = str(folder / "cnnzoo")
    start = time.perf_counter()
    path = hub.download_url(url, sha256=digest, progress=False)
    elapsed = time.perf_counter() - start
    hub.settle()
    on_disk.append(time.perf_counter() - start)
    forget_file(path.parent)
    hub._VERIFIED.clear()
    return elapsed


def sha256_speed(size: int) -> float:
    data = os.urandom(min(size, 64 << 20))
    start = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    return len(data) / (time.perf_counter() - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    size = args.size_mb * 1_000_000
    hub = load_hub()
    for var in ("TORCH_HOME", "KERAS_HOME"):  # no file of that name is found in another library's cache
        os.environ[var] = tempfile.mkdtemp(prefix="cnnzoo-bench-")
    os.environ.pop("CNNZOO_OFFLINE", None)
    server, served = start_server(size)
    times: dict[str, list[float]] = {"copy": [], "hub": []}
    on_disk: list[float] = []
    cpu: dict[str, list[tuple[float, float]]] = {"copy": [], "hub": []}  # (client, server) CPU seconds per run
    try:
        with tempfile.TemporaryDirectory(prefix="cnnzoo-bench-") as tmp:
            folder = Path(tmp)
            time_copy(served["url"], folder)  # warm-up: page cache, server buffers
            for i in range(args.repeats):
                runs = [
                    ("copy", lambda: time_copy(served["url"], folder)),
                    ("hub", lambda: time_hub(hub, served["url"], served["sha256"], folder, on_disk)),
                ]
                for name, run in runs if i % 2 == 0 else runs[::-1]:
                    client, served_cpu = own_cpu_seconds(), process_cpu_seconds(server.pid)
                    times[name].append(run())
                    cpu[name].append((own_cpu_seconds() - client, process_cpu_seconds(server.pid) - served_cpu))
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    rate = {name: size / statistics.median(values) / 1e6 for name, values in times.items()}
    best = {name: size / min(values) / 1e6 for name, values in times.items()}  # the least disturbed run of each
    print(
        json.dumps(
            {
                "size_mb": args.size_mb,
                "repeats": args.repeats,
                "cpus": os.cpu_count(),
                "copy_mb_s": round(rate["copy"], 1),
                "hub_mb_s": round(rate["hub"], 1),
                "hub_vs_copy": round(rate["hub"] / rate["copy"], 3),
                "hub_vs_copy_best": round(best["hub"] / best["copy"], 3),
                # until the file is also fsynced and stamped, which the caller does not wait for
                "hub_on_disk_mb_s": round(size / statistics.median(on_disk) / 1e6, 1),
                "sha256_mb_s": round(sha256_speed(size), 1),
                # CPU milliseconds per MB (medians): on a machine whose cores are all busy, rate <= cores / this
                "cpu_ms_per_mb": {
                    name: {
                        "client": round(statistics.median(c for c, _ in runs) / args.size_mb * 1e3, 3),
                        "server": round(statistics.median(s for _, s in runs) / args.size_mb * 1e3, 3),
                    }
                    for name, runs in cpu.items()
                },
                "seconds": {name: [round(t, 3) for t in values] for name, values in times.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
