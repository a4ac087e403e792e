"""Fuzzing the file readers: byte mutations of small valid files (tests/hostile.py), a fixed number of cases.

Every mutated file must be read or refused with a :class:`cnnzoo.errors.CnnzooError` that names it:
no other exception, no crash, no hang. In this process, hypothesis drives the mutations (derandomized:
the same cases on every run, shrunk to the smallest on a failure) for the readers that cannot take the
process down. A crash would take pytest down with it, so the same readers are also run in child
processes by benchmarks/fuzz_readers.py, which reports a crash as a verdict; it runs many more cases
when run by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import hostile as H

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning"),  # torchvision 0.29's codecs
    pytest.mark.filterwarnings("ignore::UserWarning"),  # PIL and torch warn about some damaged files; verdicts decide
]

# derandomize: the same 150 cases per reader on every run; database=None: nothing written under the repository
FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
mutations = st.lists(
    st.tuples(st.sampled_from(H.MUTATIONS), st.floats(0, 1), st.floats(0, 1), st.integers(0, 255)),
    min_size=1,
    max_size=8,
)


def mutated(reader: str, name: str, steps: list) -> Path:
    data = bytearray(H.seeds_for(reader)[name])
    for op, where, extent, value in steps:
        data = H.apply_mutation(data, op, where, extent, value)
    folder = Path(tempfile.mkdtemp(prefix="cnnzoo-fuzz-"))
    path = folder / f"mutated-{name}"
    path.write_bytes(bytes(data))
    return path


def check(reader: str, name: str, steps: list) -> None:
    path = mutated(reader, name, steps)
    try:
        verdict, detail = H.run_reader(reader, path)
    finally:
        path.unlink()
        path.parent.rmdir()
    assert verdict != "bad", f"{reader} reader on {name} mutated by {steps}: {detail}"


@FUZZ
@given(name=st.sampled_from(sorted(H.image_seeds())), steps=mutations)
def test_image_reader_refuses_every_damaged_image_by_name(name, steps):
    check("image", name, steps)


@FUZZ
@given(name=st.sampled_from(sorted(H.weight_seeds())), steps=mutations)
def test_weight_readers_refuse_every_damaged_file_by_name(name, steps):
    check("weights", name, steps)


@FUZZ
@given(name=st.sampled_from(sorted(H.weight_seeds())), steps=mutations)
def test_checkpoint_reader_refuses_every_damaged_file_by_name(name, steps):
    check("checkpoint", name, steps)


def test_seeds_are_read():
    """The mutations start from sound files: each reader reads the seeds it can and refuses the others by name
    (a Keras file holds no lenet5; only a cnnzoo checkpoint is a checkpoint): a ``bad`` verdict is the mutation's."""
    readable = {
        "image": set(H.image_seeds()),
        "weights": {"cnnzoo.safetensors", "zip.pth", "legacy.pth"},  # lenet5's state dict; the others are not lenet5's
        "checkpoint": {"cnnzoo.safetensors"},
    }
    with tempfile.TemporaryDirectory() as folder:
        for reader in H.READERS:
            for name, data in H.seeds_for(reader).items():
                path = Path(folder) / name
                path.write_bytes(data)
                verdict, detail = H.run_reader(reader, path)
                assert verdict == ("ok" if name in readable[reader] else "refused"), (reader, name, detail)


def test_no_reader_crashes_or_hangs_in_a_child_process(tmp_path):
    """The crash-proof run: every reader, mutated files read in child processes that may die."""
    out = tmp_path / "fuzz.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "fuzz_readers.py"),
        "--cases",
        "120",
        "--seed",
        "1",
        "--json",
        str(out),
    ]
    p = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "torch"}
    )
    summaries = json.loads(out.read_text())
    assert [s["reader"] for s in summaries] == list(H.READERS)
    for s in summaries:
        assert sum(s["verdicts"].values()) == 120
        assert not {"bad", "crash", "hang"} & set(s["verdicts"]), (s["reader"], s["problems"], p.stdout[-2000:])
        assert s["verdicts"].get("refused", 0) > 60  # the mutations did damage most files: the readers were tested
    assert p.returncode == 0, p.stdout + p.stderr
