"""``run_training`` and ``selfee-fast train``: a complete run folder, only rank 0 writes under DDP, Ctrl-C
checkpoints and resume continues, arena corners."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from conftest import TINY, make_tiny_cfg
from selfee.train import run_training

from .conftest import free_port, metrics


def test_run_training_writes_a_complete_run(tmp_path, video):
    cfg = make_tiny_cfg("optim.steps=4", "train.checkpoint_every=2", "train.eval_every=2", "data.holdout_fraction=0.25",
                        "loss.byol=true")
    summary = run_training(cfg, [video], tmp_path / "run", show_progress=False)
    run = tmp_path / "run"
    assert summary["step"] == 4
    assert {p.name for p in run.glob("*.pt")} == {"step0000002.pt", "step0000004.pt", "last.pt"}
    rows = metrics(run / "metrics.csv")
    assert rows[-1]["val_loss"] != "" and float(rows[-1]["collapse_z"]) <= 1.0
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scaler", "step", "config", "rng", "scheduler"} <= set(ckpt)
    assert any(k.startswith("target.") for k in ckpt["model"])  # BYOL's EMA encoder
    assert (run / "config.yaml").exists()
    info = json.loads((run / "run.json").read_text())
    assert info["pipeline"] == "torch"
    assert info["pipeline_choice"] == {"wanted": "torch", "taken": "torch", "why": "train.pipeline=torch",
                                       "fallback": False}
    # --resume of a finished run does nothing more
    assert run_training(cfg, [video], run, resume=True, show_progress=False)["step"] == 4


def _audited_run_training(rank, world, port, video, out, logs):
    """run_training under DDP; every file event in the run folder is recorded through an audit hook."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    root = os.path.abspath(out) + os.sep
    writes, reads = [], []
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    mutating = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.utime", "os.link",
                "os.symlink", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

    def in_run(p):
        return isinstance(p, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(p)).startswith(root)

    def hook(event, args):
        if event == "open" and args and in_run(args[0]):
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            written = flags & write_flags or any(c in mode for c in "wax+")
            (writes if written else reads).append(os.fsdecode(args[0]))
        elif event in mutating and any(in_run(a) for a in args):
            writes.append(f"{event} {[os.fsdecode(a) for a in args if in_run(a)]}")

    sys.addaudithook(hook)
    cfg = make_tiny_cfg("optim.steps=2", "train.checkpoint_every=2", "optim.batch_size=16",
                   "data.preprocess.background=mean", "data.preprocess.background_samples=4")
    run_training(cfg, [video], out, show_progress=False)
    import torch.distributed as tdist

    tdist.destroy_process_group()
    with open(os.path.join(logs, f"rank{rank}.json"), "w") as f:
        json.dump({"writes": writes, "reads": reads}, f)


@pytest.mark.slow
def test_ddp_run_training_only_rank0_writes_into_the_run_folder(tmp_path, video):
    out, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    mp.spawn(_audited_run_training, args=(2, free_port(), str(video), str(out), str(logs)), nprocs=2, join=True)
    r0 = json.loads((logs / "rank0.json").read_text())
    r1 = json.loads((logs / "rank1.json").read_text())
    assert r1["writes"] == []
    backgrounds = list((out / "backgrounds").glob("*.background.npy"))
    assert len(backgrounds) == 1
    assert any(p.endswith(".background.npy") for p in r1["reads"])  # rank 1 used rank 0's cached background
    # the hook does see rank 0's writes: checkpoints, metrics, config, the background cache
    for name in ("last.pt", "metrics.csv", "config.yaml", "run.json", ".background.npy"):
        assert any(name in w for w in r0["writes"]), name
    assert {p.name for p in out.iterdir()} == {"backgrounds", "last.pt", "step0000002.pt", "metrics.csv",
                                               "config.yaml", "run.json"}


CLI_TINY = ["--steps", 100000, "--device", "cpu", "--pipeline", "torch", "--init", "none",
            *[a for kv in TINY if not kv.startswith(("train.device", "train.pipeline", "model.init"))
              for a in ("-s", kv)], "-s", "train.checkpoint_every=100000"]


def _rows_step(path):
    try:
        rows = metrics(path)
        return int(float(rows[-1]["step"])) if rows else 0
    except (OSError, ValueError, KeyError):  # not written yet, or a row half-written
        return 0


def _interrupt_when(cmd, cwd, metrics_path, min_step):
    """Run the CLI, send SIGINT (a real Ctrl-C) once metrics.csv reaches ``min_step``, wait for the exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("SELFEE_DEBUG", "SELFEE_PROGRESS")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "selfee.cli", *map(str, cmd)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    try:
        while _rows_step(metrics_path) < min_step:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"training exited early ({proc.returncode}):\n{out}\n{err}")
            if time.monotonic() > deadline:
                pytest.fail("training made no progress")
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out + err


@pytest.mark.slow
def test_ctrl_c_checkpoints_exits_cleanly_and_resume_continues(tmp_path, video):
    run = tmp_path / "run"
    cmd = ["train", video, "--out", run, *CLI_TINY]
    code, output = _interrupt_when(cmd, tmp_path, run / "metrics.csv", 1)
    assert code == 130, output
    assert "Traceback" not in output and "Ctrl-C: stopping after this step" in output
    assert output.rstrip().splitlines()[-1] == "interrupted"
    first = torch.load(run / "last.pt", weights_only=True)
    assert first["step"] > 0 and f"interrupted at step {first['step']}: writing a checkpoint" in output
    assert _rows_step(run / "metrics.csv") == first["step"]  # the checkpoint holds the last logged step

    code, output = _interrupt_when([*cmd, "--resume"], tmp_path, run / "metrics.csv", first["step"] + 2)
    assert code == 130 and "Traceback" not in output, output
    assert f"resuming at step {first['step']}" in output
    second = torch.load(run / "last.pt", weights_only=True)
    assert second["step"] >= first["step"] + 2
    # one metrics row per step, no gap or repeat across the interruption
    assert [int(r["step"]) for r in metrics(run / "metrics.csv")] == list(range(1, second["step"] + 1))


def test_train_with_arena_corners(tmp_path, video):
    cfg = make_tiny_cfg("optim.steps=1", "train.checkpoint_every=1")
    corners = tmp_path / "corners.json"
    corners.write_text('{"corners": [[4, 4], [60, 4], [60, 44], [4, 44]], "size": 40}')
    run_training(cfg, [video], tmp_path / "run", show_progress=False, corners=corners)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"]
    entry = saved["data"]["videos"]["train.mp4"]
    assert entry["arena"] == "open_field" and entry["arena_size"] == 40
