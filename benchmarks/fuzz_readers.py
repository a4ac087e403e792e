"""Fuzz cnnzoo's file readers: byte mutations of small valid files, each read in a child process.

    python benchmarks/fuzz_readers.py                       # 2,000 cases per reader (about 3 minutes)
    python benchmarks/fuzz_readers.py --cases 20000 --readers image --seed 7
    python benchmarks/fuzz_readers.py --raw-decoders        # torchvision's own decoders, for comparison

Readers (tests/hostile.py): ``image`` (cnnzoo.data.images.read_image, what predict and folder training
use), ``weights`` (load_pretrained: format detection, safetensors, torch.load(weights_only=True),
the h5py readers of Keras files), ``checkpoint`` (read_metadata + load_model: what eval, predict and
visualize do). Each case is one seed file with 1 to 8 random mutations, written to disk
and read. The verdicts: ``ok``, ``refused`` (a CnnzooError naming the file), ``bad`` (any other
exception, or a message without the file's name), ``crash`` (the child died of a signal: the
reader took the process down) and ``hang`` (no answer within --timeout seconds). Cases run in child
processes, a batch each, so a crash costs one case and names it; the parent starts the next child
after it. Exit status 1 if any case was bad, crashed or hung.

``--raw-decoders`` fuzzes torchvision.io.decode_png / decode_jpeg directly on the same image seeds:
where cnnzoo's reader must never crash, these show why it does not hand PNGs to libpng that way.
The suite runs a small fixed number of cases (tests/test_fuzz_readers.py); this runs many more.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/hostile.py: the seeds, the mutations and the readers

READERS = ("image", "weights", "checkpoint")


def case(reader: str, seed: int, k: int) -> tuple[str, bytes]:
    """Case ``k`` of a run: (seed file name, mutated bytes), the same for the same (reader, seed, k)."""
    from tests.hostile import mutate, seeds_for

    rng = random.Random(f"{reader}:{seed}:{k}")
    seeds = seeds_for(reader)
    name = rng.choice(sorted(seeds))
    return name, mutate(seeds[name], rng)


def child(reader: str, seed: int, start: int, stop: int, folder: Path) -> None:
    """Run cases start..stop-1, printing ``BEGIN k`` before each and one JSON verdict line after it."""
    from tests.hostile import run_reader

    import cnnzoo.weights.load

    # A Keras file that makes the HDF5 library loop is read in a grandchild that load.py kills at this
    # limit (60 s in use); the case is then "refused", as it should be, and the run goes on sooner.
    cnnzoo.weights.load.HDF5_SECONDS = 5
    raw = reader.startswith("raw-")
    for k in range(start, stop):
        name, data = case("image" if raw else reader, seed, k)
        path = folder / f"case{k}-{name}"
        path.write_bytes(data)
        print(f"BEGIN {k}", flush=True)
        verdict, detail = _raw_decode(reader, data) if raw else run_reader(reader, path)
        print(json.dumps({"k": k, "seed_file": name, "verdict": verdict, "detail": detail}), flush=True)
        path.unlink()


def _raw_decode(reader: str, data: bytes) -> tuple[str, str]:
    import torch
    from torchvision.io import decode_jpeg, decode_png

    decode = decode_png if reader == "raw-png" else decode_jpeg
    try:
        decode(torch.frombuffer(bytearray(data or b"\0"), dtype=torch.uint8))
    except RuntimeError as e:
        return "refused", str(e)[-200:]
    return "ok", ""


def run(reader: str, seed: int, cases: int, timeout: float, batch: int = 500) -> dict:
    """Every case of one reader, in child processes; a summary with the cases that went wrong."""
    counts: Counter[str] = Counter()
    problems: list[dict] = []
    start, started, contained = 0, time.perf_counter(), 0
    with tempfile.TemporaryDirectory(prefix="cnnzoo-fuzz-") as folder:
        while start < cases:
            stop = min(start + batch, cases)
            done, failure = _one_child(reader, seed, start, stop, Path(folder), timeout)
            for verdict in done:
                counts[verdict["verdict"]] += 1
                contained += "the HDF5 library" in verdict["detail"]  # a hang or crash that load.py's child took
                if verdict["verdict"] == "bad":
                    problems.append(verdict)
            if failure is None:
                start = stop
                continue
            counts[failure["verdict"]] += 1
            problems.append(failure)
            start = failure["k"] + 1
    seconds = time.perf_counter() - started
    summary = {"reader": reader, "seed": seed, "cases": cases, "seconds": round(seconds, 1), "verdicts": dict(counts)}
    return {**summary, "hdf5_contained": contained, "problems": problems[:20]}


def _one_child(
    reader: str, seed: int, start: int, stop: int, folder: Path, timeout: float
) -> tuple[list[dict], dict | None]:
    """Run one child over cases start..stop-1: the verdicts it gave, and the crash or hang that ended it early.

    The child's lines are read as they come, so a case that takes more than ``timeout`` seconds is a hang
    at once (the first case also has the child's imports to wait for)."""
    command = [sys.executable, __file__, "--child", reader, str(seed), str(start), str(stop), str(folder)]
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch"), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as err_file:
        p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err_file, text=True, env=env)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in p.stdout] + [lines.put(None)], daemon=True).start()
        verdicts, begun, hung, wait = [], [], False, timeout + 120
        while True:
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                p.kill()
                hung = True
                break
            if line is None:
                break
            if line.startswith("BEGIN "):
                begun.append(int(line.split()[1]))
                wait = timeout
            elif line.startswith("{"):
                verdicts.append(json.loads(line))
        p.wait()
        err_file.seek(0)
        err = err_file.read()
    if p.returncode == 0 and not hung:
        return verdicts, None
    if not begun:  # the child failed before its first case: report it, do not loop
        raise RuntimeError(f"fuzz child failed to start ({p.returncode}): {err[-2000:]}")
    k = begun[-1]
    name, _ = case("image" if reader.startswith("raw-") else reader, seed, k)
    verdict = "hang" if hung else "crash"
    detail = f"exit status {p.returncode}; stderr: {err.strip()[-300:]}"
    return verdicts, {"k": k, "seed_file": name, "verdict": verdict, "detail": detail}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=2000, help="cases per reader")
    p.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a case may take before it is a hang")
    p.add_argument("--raw-decoders", action="store_true", help="fuzz torchvision's decode_png and decode_jpeg instead")
    p.add_argument("--json", help="also write the summaries to this file")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        reader, seed, start, stop, folder = args.child
        child(reader, int(seed), int(start), int(stop), Path(folder))
        return 0
    readers = ["raw-png", "raw-jpeg"] if args.raw_decoders else args.readers
    summaries = [run(r, args.seed, args.cases, args.timeout) for r in readers]
    for s in summaries:
        verdicts = ", ".join(f"{v} {n}" for v, n in sorted(s["verdicts"].items()))
        contained = f" (of them {s['hdf5_contained']} HDF5 hangs or crashes, contained)" if s["hdf5_contained"] else ""
        print(f"{s['reader']:10} {s['cases']:>6} cases in {s['seconds']:>6.1f} s: {verdicts}{contained}")
        for problem in s["problems"]:
            print(f"    case {problem['k']} ({problem['seed_file']}): {problem['verdict']}: {problem['detail']}")
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=2))
    failed = any(s["verdicts"].get(v) for s in summaries for v in ("bad", "crash", "hang"))
    return 1 if failed and not args.raw_decoders else 0


if __name__ == "__main__":
    sys.exit(main())
