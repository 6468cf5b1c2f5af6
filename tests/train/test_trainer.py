"""The Trainer: loss goes down, exact resume, NaN guard, precision, schedule, batches over processes; DDP over gloo."""

import os

import pytest
import torch
import torch.multiprocessing as mp

from conftest import make_tiny_cfg
from selfee.data import TorchPipeline, ViewBatch, make_sources
from selfee.errors import SelfeeError
from selfee.runtime import DistInfo, resolve_amp
from selfee.train import Trainer, TrainingDiverged, check_batch
from selfee.video import probe

from .conftest import free_port, metrics


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    cfg = make_tiny_cfg("optim.steps=25", "optim.base_lr=0.5", "train.checkpoint_every=1000")
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.rand(8, 3, 32, 32, generator=g), torch.rand(8, 3, 32, 32, generator=g)
    batch = ViewBatch(v1, v2 * 0.5 + v1 * 0.5, None, None)
    trainer = Trainer(cfg, tmp_path)
    trainer.fit([batch] * 25, show_progress=False)
    losses = [float(r["loss"]) for r in metrics(tmp_path / "metrics.csv")]
    assert len(losses) == 25
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


def test_resume_reproduces_the_uninterrupted_run(tmp_path, video):
    cfg = make_tiny_cfg("optim.steps=8", "train.checkpoint_every=4")
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
    cfg = make_tiny_cfg("optim.steps=10", "train.checkpoint_every=2", "train.log_every=2")
    good = ViewBatch(torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32), None, None)
    bad = ViewBatch(torch.full((8, 3, 32, 32), float("nan")), torch.rand(8, 3, 32, 32), None, None)
    trainer = Trainer(cfg, tmp_path)
    with pytest.raises(TrainingDiverged, match="NaN"):
        trainer.fit([good, good, bad, good, good], show_progress=False)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())


def _ddp_worker(rank, world, port, video, out, device_name="cpu", extra=()):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from selfee.runtime import init_distributed

    cfg = make_tiny_cfg("optim.steps=3", "train.checkpoint_every=3", "optim.batch_size=16", f"train.device={device_name}",
                   *extra)
    dist, device = init_distributed(device_name)
    local = cfg.replace(**{"optim.batch_size": 8})
    sources = make_sources([probe(video)], cfg)
    # Each rank gets its own run folder, so the test sees whatever each one writes.
    trainer = Trainer(cfg, os.path.join(out, f"rank{rank}"), device=device, dist=dist)
    pipe = TorchPipeline(sources, local, device, rank=dist.rank, world=dist.world)
    seen = []

    def record():
        for b in pipe:
            seen.append(b.frame.cpu().clone())
            yield b

    trainer.fit(record(), show_progress=False)
    pipe.close()
    chunks = {(c.center_start, c.center_stop) for cs in pipe.loader.sampler.chunks for c in cs}
    params = {k: v.detach().cpu() for k, v in trainer.model.named_parameters()}
    buffers = {k: v.detach().cpu() for k, v in trainer.model.named_buffers() if k.endswith(("running_mean", "running_var"))}
    sync_bn = [type(m).__name__ for m in trainer.model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    torch.save({"params": params, "buffers": buffers, "sync_bn": sync_bn, "frames": torch.cat(seen),
                "chunks": sorted(chunks)}, os.path.join(out, f"rank{rank}.state"))
    import torch.distributed as tdist

    tdist.destroy_process_group()


def _run_ddp(tmp_path, video, device_name="cpu", *extra):
    mp.spawn(_ddp_worker, args=(2, free_port(), video, str(tmp_path), device_name, extra), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.state", weights_only=True) for r in (0, 1)]


@pytest.mark.slow
def test_ddp_on_cpu_keeps_ranks_identical_and_shards_disjoint(tmp_path, video):
    r0, r1 = _run_ddp(tmp_path, video)
    c0, c1 = set(map(tuple, r0["chunks"])), set(map(tuple, r1["chunks"]))
    assert c0 and c1 and not (c0 & c1)
    in_c1 = [any(a <= f < b for a, b in c1) for f in r0["frames"].tolist()]
    assert not any(in_c1)  # rank 0 only sampled its own shard
    # gradients are averaged across ranks, so the weights stay identical (BN statistics stay per rank)
    for k, v in r0["params"].items():
        assert torch.allclose(v, r1["params"][k], atol=1e-6), k
    assert not r0["sync_bn"]
    assert any(not torch.allclose(v, r1["buffers"][k]) for k, v in r0["buffers"].items())
    # only rank 0 writes: with a run folder of its own, rank 1 left none at all
    assert {"last.pt", "step0000003.pt", "metrics.csv", "config.yaml"} <= {p.name for p in (tmp_path / "rank0").iterdir()}
    assert not (tmp_path / "rank1").exists()


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (NCCL, one per rank)")
def test_ddp_sync_bn_on_gpus_shares_batch_statistics(tmp_path, video):
    r0, r1 = _run_ddp(tmp_path, video, "cuda", "train.sync_bn=true")
    assert r0["sync_bn"] and r1["sync_bn"]
    for k, v in r0["params"].items():
        assert torch.allclose(v, r1["params"][k], atol=1e-6), k
    # statistics over the global batch: the running estimates are the same on both ranks
    for k, v in r0["buffers"].items():
        assert torch.allclose(v, r1["buffers"][k], rtol=1e-5, atol=1e-6), k
    assert (tmp_path / "rank0" / "last.pt").exists() and not (tmp_path / "rank1").exists()


def test_sync_bn_without_cuda_is_a_clear_error(tmp_path):
    # PyTorch's SyncBatchNorm has no CPU kernel: refuse at start-up, not at the first forward
    with pytest.raises(SelfeeError, match="train.sync_bn=true needs CUDA"):
        Trainer(make_tiny_cfg("train.sync_bn=true"), tmp_path, device=torch.device("cpu"), dist=DistInfo(0, 2, 0))


def test_per_process_batch_must_hold_the_clusters(tmp_path):
    cfg = make_tiny_cfg("optim.batch_size=8", "loss.clusters=3")  # fine for one process
    check_batch(cfg, 2)  # 4 per process
    with pytest.raises(SelfeeError, match=r"optim.batch_size=8 over 4 processes gives 2 samples per process, "
                                          r"fewer than loss.clusters=3"):
        Trainer(cfg, tmp_path, dist=DistInfo(0, 4, 0))
    with pytest.raises(SelfeeError, match="divisible by the 3 processes"):
        Trainer(cfg, tmp_path, dist=DistInfo(0, 3, 0))
    check_batch(make_tiny_cfg("optim.batch_size=8", "loss.clusters=3", "loss.cld=false"), 4)  # no k-means, no limit


def test_resolve_amp():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)  # a device object needs no GPU
    assert resolve_amp("auto", cpu) is None  # fp32 on the CPU
    assert resolve_amp("off", cpu) is None and resolve_amp("off", gpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16 and resolve_amp("bf16", gpu) is torch.bfloat16
    assert resolve_amp("auto", gpu) is torch.bfloat16
    assert resolve_amp("fp16", gpu) is torch.float16
    with pytest.raises(SelfeeError, match="amp=fp16 needs a CUDA GPU; on CPU use amp=off or amp=bf16"):
        resolve_amp("fp16", cpu)


def test_bf16_on_cpu_trains_without_a_grad_scaler(tmp_path):
    trainer = Trainer(make_tiny_cfg("train.amp=bf16", "optim.steps=2"), tmp_path)
    assert trainer.amp_dtype is torch.bfloat16 and not trainer.scaler.is_enabled()
    before = trainer.model.encoder.backbone.conv1.weight.detach().clone()
    m = trainer.train_step(torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32))
    assert torch.isfinite(m["loss"]) and not torch.equal(before, trainer.model.encoder.backbone.conv1.weight)
    assert trainer.model.encoder.backbone.conv1.weight.dtype == torch.float32  # autocast, weights stay fp32


@pytest.mark.parametrize("cycle", [True, False])
def test_momentum_follows_pytorchs_one_cycle_like_the_original(tmp_path, cycle):
    # The original: SGD(momentum=0.9) + OneCycleLR(cycle_momentum=True), which sets momentum 0.95 -> 0.85 -> 0.95
    # at every step, so its 0.9 was never used. optim.momentum applies only with cycle_momentum=false.
    cfg = make_tiny_cfg("optim.steps=10", "optim.warmup_fraction=0.3", f"optim.cycle_momentum={str(cycle).lower()}")
    p = torch.nn.Parameter(torch.zeros(1))
    ref = torch.optim.SGD([p], lr=cfg.optim.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=cfg.optim.lr, total_steps=10, pct_start=0.3,
                                                cycle_momentum=cycle)
    trainer = Trainer(cfg, tmp_path)
    batch = (torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32))
    seen = []
    for _ in range(10):
        m = trainer.train_step(*batch)
        seen.append(trainer.optimizer.param_groups[0]["momentum"])
        assert float(m["momentum"]) == pytest.approx(seen[-1])
        assert seen[-1] == pytest.approx(ref.param_groups[0]["momentum"])
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"])
        ref.step()
        sched.step()
    if cycle:
        assert seen[0] == pytest.approx(0.95) and min(seen) == pytest.approx(0.85) and 0.9 not in seen
    else:
        assert seen == [0.9] * 10


def test_embedding_bn_is_estimated_once_per_step(tmp_path):
    """The quality monitor and the checkpoint of one step share one estimate; a new step estimates anew."""
    calls = []

    def plain():
        calls.append(1)
        g = torch.Generator().manual_seed(len(calls))
        yield torch.rand(32, 3, 32, 32, generator=g)

    trainer = Trainer(make_tiny_cfg(), tmp_path, plain_frames=plain)
    first = trainer.embedding_bn()
    assert first is not None and trainer.embedding_bn() is first and len(calls) == 1
    trainer.step += 1
    second = trainer.embedding_bn()
    assert len(calls) == 2 and second is not first
