"""Trainer: loss goes down, exact resume, NaN guard, Ctrl-C checkpoint, outputs; DDP over gloo."""

import csv
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from conftest import numbered_frames, write_video
from selfee.config import SelfeeConfig
from selfee.data import TorchPipeline, ViewBatch, make_sources
from selfee.train import Trainer, TrainingDiverged, run_training
from selfee.video import probe

TINY = [
    "model.arch=resnet18", "model.proj_dim=32", "model.pred_hidden=8", "model.cld_dim=16", "model.init=none",
    "loss.clusters=3", "optim.batch_size=8", "data.input_size=[32,32]", "data.frame_interval=1",
    "data.pool_batches=2", "data.chunk_frames=16", "train.log_every=1", "train.tensorboard=false",
    "train.eval_every=0", "train.device=cpu", "train.pipeline=torch",
]


def tiny_cfg(*extra):
    return SelfeeConfig.load(overrides=[*TINY, *extra])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "train.mp4", numbered_frames(48), g=16)


def metrics(path):
    with open(path) as f:
        return [r for r in csv.DictReader(f)]


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    cfg = tiny_cfg("optim.steps=25", "optim.base_lr=0.5", "train.checkpoint_every=1000")
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.rand(8, 3, 32, 32, generator=g), torch.rand(8, 3, 32, 32, generator=g)
    batch = ViewBatch(v1, v2 * 0.5 + v1 * 0.5, None, None)
    trainer = Trainer(cfg, tmp_path)
    trainer.fit([batch] * 25, show_progress=False)
    losses = [float(r["loss"]) for r in metrics(tmp_path / "metrics.csv")]
    assert len(losses) == 25
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


def test_resume_reproduces_the_uninterrupted_run(tmp_path, video):
    cfg = tiny_cfg("optim.steps=8", "train.checkpoint_every=4")
    sources = make_sources([probe(video)], cfg)

    full = Trainer(cfg, tmp_path / "full")
    pipe = TorchPipeline(sources, cfg, "cpu")
    full.fit(pipe, show_progress=False)
    pipe.close()

    class Interrupt:
        def __init__(self, pipe, after):
            self.pipe, self.after = pipe, after

        def __iter__(self):
            for i, b in enumerate(self.pipe):
                if i == self.after:
                    raise KeyboardInterrupt
                yield b

    first = Trainer(cfg, tmp_path / "resumed")
    pipe = TorchPipeline(sources, cfg, "cpu")
    with pytest.raises(KeyboardInterrupt):
        first.fit(Interrupt(pipe, 5), show_progress=False)  # Ctrl-C during step 6
    pipe.close()
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["step"] == 5

    second = Trainer(cfg, tmp_path / "resumed")
    second.load(tmp_path / "resumed" / "last.pt")
    pipe = TorchPipeline(sources, cfg, "cpu", start_step=second.step)
    second.fit(pipe, show_progress=False)
    pipe.close()
    a = metrics(tmp_path / "full" / "metrics.csv")
    b = metrics(tmp_path / "resumed" / "metrics.csv")
    assert [r["step"] for r in b] == [str(i) for i in range(1, 9)]
    for ra, rb in zip(a, b):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)
    wa = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5), k


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg("optim.steps=10", "train.checkpoint_every=2", "train.log_every=2")
    good = ViewBatch(torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32), None, None)
    bad = ViewBatch(torch.full((8, 3, 32, 32), float("nan")), torch.rand(8, 3, 32, 32), None, None)
    trainer = Trainer(cfg, tmp_path)
    with pytest.raises(TrainingDiverged, match="NaN"):
        trainer.fit([good, good, bad, good, good], show_progress=False)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())


def test_run_training_writes_a_complete_run(tmp_path, video):
    cfg = tiny_cfg("optim.steps=4", "train.checkpoint_every=2", "train.eval_every=2", "data.holdout_fraction=0.25",
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
    # --resume of a finished run does nothing more
    assert run_training(cfg, [video], run, resume=True, show_progress=False)["step"] == 4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, video, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from selfee.train import init_distributed

    cfg = tiny_cfg("optim.steps=3", "train.checkpoint_every=3", "optim.batch_size=16")
    dist, device = init_distributed("cpu")
    local = cfg.replace(**{"optim.batch_size": 8})
    sources = make_sources([probe(video)], cfg)
    trainer = Trainer(cfg, out, device=device, dist=dist)
    pipe = TorchPipeline(sources, local, device, rank=dist.rank, world=dist.world)
    seen = []

    def record():
        for b in pipe:
            seen.append(b.frame.clone())
            yield b

    trainer.fit(record(), show_progress=False)
    pipe.close()
    chunks = {(c.center_start, c.center_stop) for cs in pipe.loader.sampler.chunks for c in cs}
    params = {k: v.detach() for k, v in trainer.model.named_parameters()}
    torch.save({"params": params, "frames": torch.cat(seen), "chunks": sorted(chunks)},
               os.path.join(out, f"rank{rank}.state"))
    import torch.distributed as tdist

    tdist.destroy_process_group()


@pytest.mark.slow
def test_ddp_on_cpu_keeps_ranks_identical_and_shards_disjoint(tmp_path, video):
    mp.spawn(_ddp_worker, args=(2, _free_port(), video, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.state", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.state", weights_only=True)
    c0, c1 = set(map(tuple, r0["chunks"])), set(map(tuple, r1["chunks"]))
    assert c0 and c1 and not (c0 & c1)
    in_c1 = [any(a <= f < b for a, b in c1) for f in r0["frames"].tolist()]
    assert not any(in_c1)  # rank 0 only sampled its own shard
    # gradients are averaged across ranks, so the weights stay identical (BN statistics stay per rank)
    for k, v in r0["params"].items():
        assert torch.allclose(v, r1["params"][k], atol=1e-6), k
    assert (tmp_path / "last.pt").exists() and not (tmp_path / "rank1").exists()


def test_train_with_arena_corners(tmp_path, video):
    cfg = tiny_cfg("optim.steps=1", "train.checkpoint_every=1")
    corners = tmp_path / "corners.json"
    corners.write_text('{"corners": [[4, 4], [60, 4], [60, 44], [4, 44]], "size": 40}')
    run_training(cfg, [video], tmp_path / "run", show_progress=False, corners=corners)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"]
    entry = saved["data"]["videos"]["train.mp4"]
    assert entry["arena"] == "open_field" and entry["arena_size"] == 40
