"""Training-step throughput on synthetic inputs: fp32 vs AMP, channels-last on/off, compile on/off.

Compute only (no decode, no augmentation): two views of random frames already on the device go
through the full SimSiam + CLD step (forward, loss with k-means, backward, SGD).

    python -m selfee.bench.train_step --device cuda --arch resnet50 --batch-size 256 --size 256 192
    python -m selfee.bench.train_step --device cpu --arch resnet18 --batch-size 32 --size 64 64
"""

from __future__ import annotations

import argparse
import itertools
import tempfile

import torch

from selfee.bench.timing import environment, measure, save_results, table
from selfee.config import SelfeeConfig
from selfee.data import SyntheticPipeline
from selfee.train import Trainer


def bench_config(args, amp: str, channels_last: bool, compile_: bool) -> SelfeeConfig:
    return SelfeeConfig.load(
        overrides=[
            f"model.arch={args.arch}",
            "model.init=none",
            f"optim.batch_size={args.batch_size}",
            f"data.input_size=[{args.size[0]},{args.size[1]}]",
            f"train.amp={amp}",
            f"train.channels_last={str(channels_last).lower()}",
            f"train.compile={str(compile_).lower()}",
            f"train.device={args.device}",
            "train.tensorboard=false",
        ]
    )


def run_one(args, amp: str, channels_last: bool, compile_: bool) -> dict:
    cfg = bench_config(args, amp, channels_last, compile_)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp)
        batches = iter(SyntheticPipeline(cfg, trainer.device))

        def steps():
            for _ in range(args.steps):
                b = next(batches)
                trainer.train_step(b.view1, b.view2)

        t = measure(steps, warmup=1 if compile_ else 1, repeats=args.repeats, device=trainer.device)
    sps = args.steps * args.batch_size / t["median_s"]
    return {
        "amp": amp,
        "channels_last": channels_last,
        "compile": compile_,
        "samples_per_s": sps,
        "steps_per_s": args.steps / t["median_s"],
        "median_s_per_step": t["median_s"] / args.steps,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--amp", nargs="+", default=None, help="precisions to try (default: off and bf16 [+fp16 on GPU])")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--out", default=None, help="JSON results file")
    args = p.parse_args(argv)
    amps = args.amp or (["off", "bf16", "fp16"] if args.device.startswith("cuda") else ["off", "bf16"])
    compiles = [False] if args.no_compile else [False, True]
    rows = []
    for amp, cl, comp in itertools.product(amps, [True, False], compiles):
        try:
            rows.append(run_one(args, amp, cl, comp))
        except Exception as exc:  # a variant that cannot run here (e.g. compile without a compiler)
            rows.append({"amp": amp, "channels_last": cl, "compile": comp, "error": f"{type(exc).__name__}: {exc}"[:120]})
        print(table(rows[-1:], list(rows[-1].keys())), flush=True)
    env = environment()
    path = save_results("train_step", [{**r, "arch": args.arch, "batch_size": args.batch_size,
                                         "size": list(args.size), "device": args.device} for r in rows], args.out)
    print(f"\n{args.arch}, batch {args.batch_size}, {args.size[0]}x{args.size[1]}, two views, on "
          f"{env.get('gpu') or env['cpu']} ({args.device})")
    print(table(rows, ["amp", "channels_last", "compile", "samples_per_s", "steps_per_s", "error"]))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
