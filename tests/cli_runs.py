"""Running ``python -m cnnzoo`` as a child process, as a user would, and the processes it starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(*args, check=True, timeout=300):
    p = subprocess.run(
        [sys.executable, "-m", "cnnzoo", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout
    )
    if check and p.returncode != 0:
        raise AssertionError(f"cnnzoo {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / json.loads((run_dir / "last.json").read_text())["weights"])


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (torchrun starts its workers in sessions of their own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out
