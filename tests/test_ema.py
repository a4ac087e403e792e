"""The weights' moving average and the repeated-augmentation sampler: the references' formulas step for step,
what a run folder with an EMA holds and who reads it, resume after SIGKILL bitwise equal, and DDP coverage."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import cnnzoo
from cnnzoo.data.samplers import RASampler, repeated_order
from cnnzoo.train import TrainConfig, train
from cnnzoo.train.ema import ExponentialMovingAverage, adjusted_decay

from .cli_runs import ENV, cli, descendants

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_decay_is_adjusted_as_torchvisions_references_do():
    # references/classification/train.py: adjust = world_size * batch_size * model_ema_steps / epochs;
    # alpha = min(1, (1 - model_ema_decay) * adjust); decay = 1 - alpha. The ResNet-50 V2 recipe on 8 GPUs:
    adjust = 8 * 128 * 32 / 600
    assert adjusted_decay(0.99998, batch_size=128, world_size=8, ema_steps=32, epochs=600) == 1.0 - min(
        1.0, (1.0 - 0.99998) * adjust
    )
    assert abs(adjusted_decay(0.99998, batch_size=128, world_size=8, ema_steps=32, epochs=600) - 0.998907733) < 1e-9
    assert adjusted_decay(0.9, batch_size=256, world_size=1, ema_steps=32, epochs=1) == 0.0  # alpha capped at 1: a copy


def _tiny():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_the_ema_equals_the_reference_formula_step_for_step():
    """Every EMA_STEPS-th step (torchvision's ``i % model_ema_steps == 0``): ema = d * ema + (1 - d) * w for
    parameters and buffers; during warm-up epochs the count is reset, so the next update copies."""
    model, decay, every, warmup = _tiny(), 0.9, 2, 1
    ema = ExponentialMovingAverage(model, decay)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reference, count = None, 0
    for epoch in range(3):
        for step in range(5):
            x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            ema.step(model, step, every=every, epoch=epoch, warmup_epochs=warmup)
            if step % every == 0:
                current = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if count == 0:
                    reference = current
                else:
                    reference = {k: (decay * reference[k] + (1 - decay) * v).to(v.dtype) for k, v in current.items()}
                count = 0 if epoch < warmup else count + 1
            averaged = ema.module.state_dict()
            assert all(torch.equal(averaged[k], reference[k]) for k in reference), (epoch, step)
            assert int(ema.n_averaged) == count
    assert not torch.equal(ema.module[0].weight, model[0].weight)  # after warm-up it lags the weights


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ema") / "run"
    train(
        TrainConfig(
            model="lenet5",
            epochs=2,
            out=str(out),
            progress=False,
            model_ema=True,
            model_ema_steps=1,
            model_ema_decay=0.999,
        )
    )
    return out


def test_a_run_with_ema_saves_the_average_as_its_weights_and_the_raw_beside(ema_run):
    history = [json.loads(line) for line in (ema_run / "metrics.jsonl").read_text().splitlines()]
    assert all("ema_test_acc" in h and "test_acc" in h for h in history)
    last = json.loads((ema_run / "last.json").read_text())
    assert (
        last["ema"] is True
        and last["test_acc"] == history[-1]["ema_test_acc"]
        and last["raw_test_acc"] == history[-1]["test_acc"]
    )
    ema_w, raw_w = load_file(ema_run / last["weights"]), load_file(ema_run / last["raw_weights"])
    assert ema_w.keys() == raw_w.keys() and any(not torch.equal(ema_w[k], raw_w[k]) for k in ema_w)
    # eval and load_model read the average: its accuracy is the EMA's of that epoch, the raw file's the raw one
    result = json.loads(cli("eval", ema_run, "--which", "last", "--json").stdout)
    assert abs(result["top1"] - history[-1]["ema_test_acc"]) < 1e-9
    raw = cnnzoo.create_model("lenet5")
    cnnzoo.checkpoint.load_weights(raw, ema_run / last["raw_weights"])
    loaded = cnnzoo.load_model(ema_run, which="last")
    assert all(torch.equal(loaded.state_dict()[k], ema_w[k]) for k in ema_w)
    state = torch.load(ema_run / last["state"], weights_only=True)
    assert state["ema_n_averaged"] == history[-1]["step"]  # steps 1: one update per step, no warm-up
    best = json.loads((ema_run / "best.json").read_text())
    kept = {Path(p[k]).name for p in (last, best) for k in ("weights", "raw_weights", "state")}
    assert {p.name for p in (ema_run / "checkpoints").iterdir()} == kept  # pruning keeps the raw files it names


# ---------------------------------------------------------------------------------------------
# resume bitwise, with the EMA and the RA sampler


SHORT = ["train", "lenet5", "--data", "synthetic:1024:1x28x28:10", "--batch-size", "32", "--epochs", "3", "--deterministic", "--no-progress", "--seed", "5", "--model-ema", "--model-ema-steps", "4",
         "--model-ema-decay", "0.999", "--ra-sampler", "--ra-reps", "2", "--mixup-alpha", "0.2", "--random-erase", "0.2"]  # fmt: skip


def _final(run: Path) -> tuple[dict, dict, int]:
    last = json.loads((run / "last.json").read_text())
    state = torch.load(run / last["state"], weights_only=True)
    return load_file(run / last["weights"]), load_file(run / last["raw_weights"]), state["ema_n_averaged"]


def test_resume_with_ema_and_the_ra_sampler_after_sigkill_is_bitwise_equal(tmp_path):
    ref = tmp_path / "ref"
    cli(*SHORT, "--out", ref)
    out, args, kills = tmp_path / "run", [*SHORT, "--out", str(tmp_path / "run")], 0
    for target_epoch in (1, 2, None):  # killed in epoch 2, then in epoch 3, then left to finish
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnnzoo", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV
        )
        if target_epoch is not None:
            deadline = time.time() + 240
            while proc.poll() is None and time.time() < deadline:
                last = out / "last.json"
                if last.exists() and json.loads(last.read_text())["epoch"] >= target_epoch:
                    break
                time.sleep(0.02)
            time.sleep(0.3)  # into the next epoch
            proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=300)
        if code == -signal.SIGKILL:
            kills += 1
        else:
            assert code == 0, proc.stderr.read().decode()
        args = ["train", "--resume", str(out), "--no-progress"]
    assert kills >= 1 and json.loads((out / "last.json").read_text())["epoch"] == 3
    (a_ema, a_raw, a_n), (b_ema, b_raw, b_n) = _final(ref), _final(out)
    assert (
        a_n == b_n
        and all(torch.equal(a_ema[k], b_ema[k]) for k in a_ema)
        and all(torch.equal(a_raw[k], b_raw[k]) for k in a_raw)
    )
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[-1]["step"] == 3 * (1024 // 32)  # RA: 1024 an epoch


# ---------------------------------------------------------------------------------------------
# the RA sampler, one process and several


def reference_ra_indices(n: int, num_replicas: int, rank: int, repetitions: int, perm: list[int]) -> list[int]:
    """torchvision references/classification/sampler.py, RASampler.__iter__, line by line (lists, as there)."""
    import math

    num_samples = int(math.ceil(n * float(repetitions) / num_replicas))
    total_size = num_samples * num_replicas
    num_selected_samples = int(math.floor(n // 256 * 256 / num_replicas))
    indices = [ele for ele in perm for i in range(repetitions)]
    indices += indices[: (total_size - len(indices))]
    indices = indices[rank:total_size:num_replicas]
    return indices[:num_selected_samples]


@pytest.mark.parametrize("n,reps", [(1000, 4), (4000, 3), (777, 2)])
def test_ra_sampler_index_sets_for_two_processes(n, reps):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    ranks = [repeated_order(perm, world=2, rank=r, repetitions=reps) for r in (0, 1)]
    assert [r.tolist() for r in ranks] == [reference_ra_indices(n, 2, r, reps, perm.tolist()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == n // 256 * 256 // 2  # an epoch: about the data set's size in all
    # Before the cut, every image is there `reps` times over the two processes (the padding repeats the first few)
    shares = [repeated_order(perm, world=2, rank=r, repetitions=reps, cut=False) for r in (0, 1)]
    counts = torch.bincount(torch.cat(shares), minlength=n)
    padding = len(torch.cat(shares)) - n * reps
    assert (counts >= reps).all() and int((counts - reps).sum()) == padding < 2
    # and its copies are dealt to both processes: reps // 2 or more on each
    per_rank = [torch.bincount(s, minlength=n) for s in shares]
    assert all((c >= reps // 2).all() for c in per_rank)
    # after the cut an epoch holds about n / reps distinct images, each with its copies on both processes
    kept = torch.cat(ranks)
    assert abs(len(kept.unique()) - len(kept) / reps) <= 2


def test_ra_sampler_for_a_dataloader_is_the_references():
    sampler = RASampler(range(600), num_replicas=2, rank=1, seed=7, repetitions=3)
    sampler.set_epoch(4)
    perm = torch.randperm(600, generator=torch.Generator().manual_seed(7 + 4)).tolist()
    assert list(sampler) == reference_ra_indices(600, 2, 1, 3, perm) and len(sampler) == 256
    with pytest.raises(Exception, match="num_replicas and rank"):
        RASampler(range(600))  # no process group: it says what to give


def test_two_process_ddp_with_the_ra_sampler(tmp_path):
    """torchrun, 2 gloo processes: each takes floor(4000 / 256) * 256 / 2 = 1920 indices an epoch (60 batches
    of 32), every test digit is counted once, and the run ends as one would expect."""
    out = tmp_path / "ddp"
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cnnzoo", "train", "lenet5",
           "--device", "cpu", "--no-progress", "--epochs", "1", "--batch-size", "32", "--ra-sampler", "--ra-reps", "4", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        log = proc.communicate(timeout=300)[0]
    finally:
        for pid in [proc.pid, *descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, log
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [60] and all(h["test_count"] == 1000 for h in history)
    assert history[-1]["test_acc"] > 0.5, history  # it learnt
    assert "2 processes" in log


def test_a_checkpoint_without_an_ema_is_its_own_raw_weights(ema_run):
    """Run folders written before EMAs, and runs without one: the weights file is the raw weights."""
    from cnnzoo.train.ema import raw_weights_of

    last = json.loads((ema_run / "last.json").read_text())
    raw = ema_run / last["raw_weights"]
    assert raw_weights_of(raw) == raw and raw_weights_of(ema_run / last["weights"]) == raw
