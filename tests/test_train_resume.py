"""Stop and resume without loss: SIGKILL while a checkpoint is written or at random moments, then resume
bitwise equal; the schedule kept; two DDP processes killed and resumed; a run folder never overwritten.

Runs that must survive SIGKILL are real child processes (python -m cnnzoo train ...)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import cnnzoo

from .cli_runs import ENV, cli, descendants, final_weights

# ---------------------------------------------------------------------------------------------
# stop and resume without loss


SHORT = ["train", "lenet5", "--epochs", "3", "--deterministic", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    cli(*SHORT, "--out", out)
    return out


KILL_DURING_SAVE = """
import os, signal, sys
from pathlib import Path
import cnnzoo.checkpoint, cnnzoo.weights.cnnzoo_format as fmt
c = fmt if sys.argv[1] == "save_file" else cnnzoo.checkpoint  # the weights file's writer calls save_file
target, when, name_part = sys.argv[1], sys.argv[2], sys.argv[3]
calls = {"n": 0}
original = getattr(c, target)
def dying(*args, **kwargs):
    path = args[1] if target == "save_file" else args[0]  # save_file(tensors, path, ...)
    if name_part in Path(path).name:
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of epoch 2
            if when == "after":
                original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(c, target, dying)
from cnnzoo.cli import main
sys.exit(main(sys.argv[4:]))
"""


@pytest.mark.parametrize(
    "target,when,name_part",
    [
        ("save_weights", "before", ".safetensors"),  # killed before the weights file of epoch 2 is in place
        ("save_training_state", "before", ".state.pt"),  # weights of epoch 2 written, its state not: an incomplete pair
        ("save_file", "after", ".safetensors"),  # inside the atomic write: temp file written, not yet renamed
        (
            "atomic_write_text",
            "after",
            "last.json",
        ),  # pair complete and last.json moved; best.json and pruning not done
    ],
)
def test_sigkill_while_writing_a_checkpoint_then_resume_is_bitwise_equal(
    uninterrupted, tmp_path, target, when, name_part
):
    out = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, target, when, name_part, *SHORT, "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr
    last = json.loads((out / "last.json").read_text())
    assert last["epoch"] in (1, 2)
    cnnzoo.load_model(out, which="last")  # what the pointer names is complete and loads
    cli("train", "--resume", out, "--no-progress")
    a, b = final_weights(uninterrupted), final_weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [f for f in (out / "checkpoints").iterdir() if f.name.endswith(".tmp")]


def test_sigkill_at_random_moments_then_resume_is_bitwise_equal(uninterrupted, tmp_path):
    """Kill the run again and again at random moments, resume each time, until it finishes."""
    out = tmp_path / "run"
    rng = random.Random(1)
    kills = 0
    args = [*SHORT, "--out", out]
    for attempt in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnnzoo", *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        if attempt < 8:
            # wait for the run to start training (its config appears), then kill somewhere in the epochs
            deadline = time.time() + 120
            while not (out / "config.json").exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.6))
            proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=300)
        if code == 0:
            break
        assert code == -signal.SIGKILL, proc.stderr.read().decode()
        kills += 1
        args = ["train", "--resume", out, "--no-progress"]
    else:
        pytest.fail("the run never finished")
    assert kills >= 3
    a, b = final_weights(uninterrupted), final_weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_resume_keeps_the_schedule_and_says_how_to_train_further(uninterrupted, tmp_path):
    p = cli("train", "--resume", uninterrupted, "--epochs", "4", check=False)
    assert (
        p.returncode == 2 and "started for 3 epochs" in p.stderr and f"--weights {uninterrupted} --epochs 4" in p.stderr
    )
    out = tmp_path / "more"
    cli("train", "lenet5", "--weights", uninterrupted, "--epochs", "1", "--out", out, "--no-progress")
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["test_acc"] > 0.5  # it started from the trained weights, not from scratch


# ---------------------------------------------------------------------------------------------
# several processes


def test_two_process_ddp_training_killed_and_resumed(tmp_path):
    """torchrun with 2 CPU processes (gloo): killed (agent and workers) after its first
    checkpoint, resumed with torchrun again, finished; every test image counted once."""
    out = tmp_path / "ddp"
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cnnzoo"]
    first = torchrun + [
        "train",
        "lenet5",
        "--device",
        "cpu",
        "--no-progress",
        "--epochs",
        "12",
        "--batch-size",
        "32",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(first, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 240
    while not (out / "last.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    for pid in [proc.pid, *descendants(proc.pid)]:  # the agent and its workers, like a machine dying
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # a helper process that ended meanwhile
            pass
    log = proc.communicate(timeout=60)[0]
    assert (out / "last.json").exists(), log
    killed_after = json.loads((out / "last.json").read_text())["epoch"]
    assert killed_after < 12, log
    p = subprocess.run(
        torchrun + ["train", "--resume", str(out), "--device", "cpu", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 processes" in p.stdout and "resuming after epoch" in p.stdout
    assert f"resuming after epoch {killed_after}" in p.stdout
    assert p.stdout.count("epoch  12/12") == 1, p.stdout  # rank 0 alone logs
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 13))
    assert all(h["test_count"] == 1000 for h in history)  # both shards together: every test digit once
    # 4,000 training images, 2,000 per process, 62 full batches of 32 each: 62 steps per epoch
    assert history[-1]["step"] == 12 * 62
    weights = final_weights(out)
    assert not any(k.startswith("module.") for k in weights)
    assert isinstance(cnnzoo.load_model(out, which="last"), cnnzoo.models.ZooModel)


def test_an_existing_run_folder_is_never_overwritten(uninterrupted):
    before = {p: p.stat().st_mtime_ns for p in uninterrupted.rglob("*") if p.is_file()}
    p = cli("train", "lenet5", "--out", uninterrupted, "--epochs", "1", check=False)
    assert p.returncode == 2 and f"--resume {uninterrupted}" in p.stderr
    assert {p: p.stat().st_mtime_ns for p in uninterrupted.rglob("*") if p.is_file()} == before
