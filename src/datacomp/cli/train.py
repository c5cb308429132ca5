"""`datacomp train`: train the scale's fixed open_clip recipe on your data (one process or torchrun/srun)."""

from __future__ import annotations

import argparse

from datacomp.cli import add_json, add_no_progress, add_output, add_parser, flag, print_json
from datacomp.scales import available_scales

DESCRIPTION = """Train the fixed recipe of a DataComp scale on webdataset shards.

The scale fixes model, global batch, learning rate, warm-up, beta2 and samples seen; you choose the
data. Multi-device: `torchrun --nproc_per_node N -m datacomp train ...` (or `srun` under SLURM);
the global batch and step count stay the same whatever N. Re-running the same command resumes from
<output>/<exp-name>/checkpoints/epoch_latest.pt."""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "train", "train the scale's fixed open_clip recipe on shards", DESCRIPTION)
    p.add_argument("--scale", required=True, choices=available_scales(),
                   help="DataComp scale (tiny: the embedded CPU scale)")
    flag(p, "--data-dir", hidden=("--data_dir",), required=True,
                   help="shard dir(s) or .tar file(s), several separated by '::' (reshard outputs, img2dataset shards)")
    add_output(p, "--output-dir", "--output_dir", required=True,
               help="where <exp-name>/ is written (a local directory)")
    flag(p, "--exp-name", hidden=("--exp_name",), default=None, help="experiment name (default: <scale>_scale)")
    flag(p, "--data-weights", hidden=("--data_weights",), default=None,
                   help="'::'-separated sampling weight per data dir (multiplies each shard's probability)")
    p.add_argument("--uid-filter", default=None,
                   help="train only on samples whose uid is in this subset file (.npy), without resharding")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order")
    p.add_argument("-j", "--workers", type=int, default=None,
                   help="data loader processes per device (default: 0 for tiny, 4 otherwise); "
                   "part of the run's identity")
    p.add_argument("--precision", default=None,
                   choices=["amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32"],
                   help="default: the scale's (amp; fp32 for tiny); amp/fp16 fall back to fp32 on a CPU")
    flag(p, "--accum-freq", hidden=("--accum_freq",), type=int, default=1,
                   help="gradient accumulation steps (the global batch stays the scale's)")
    flag(p, "--grad-clip-norm", hidden=("--grad_clip_norm",), type=float, default=None,
                   help="clip gradients to this norm (default: no clipping)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0,
                   help="also rewrite epoch_latest.pt at least this often (a killed run loses at most this much)")
    p.add_argument("--checkpoint-every-steps", type=int, default=None, help="also checkpoint every N steps")
    flag(p, "--save-frequency", hidden=("--save_frequency",), type=int, default=0,
                   help="keep epoch_<E>.pt every E 'epochs' (0: only the final one, as the original)")
    p.add_argument("--report-to", action="append", choices=["tensorboard", "wandb"], default=[],
                   help="optional loggers (need their package installed)")
    flag(p, "--log-every-n-steps", hidden=("--log_every_n_steps",), type=int, default=100, help="logging cadence")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default=None, help="default: cuda:<local rank> if available, else cpu")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing experiment")
    add_no_progress(p)
    add_json(p, "the run's result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datacomp.train import TrainConfig, train

    overrides = {"accum_freq": args.accum_freq, "grad_clip_norm": args.grad_clip_norm}
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.precision is not None:
        overrides["precision"] = args.precision
    config = TrainConfig.from_scale(args.scale, seed=args.seed, **overrides)
    result = train(
        args.data_dir, args.output, args.exp_name or f"{args.scale}_scale", config,
        data_weights=args.data_weights, uid_filter=args.uid_filter, resume=not args.no_resume,
        checkpoint_every_steps=args.checkpoint_every_steps, checkpoint_minutes=args.checkpoint_minutes,
        save_frequency=args.save_frequency, report_to=tuple(args.report_to), device=args.device,
        threads=args.threads, progress=not args.no_progress, log_every_n_steps=args.log_every_n_steps,
    )
    from datacomp.train.distributed import world_info

    if world_info()[1] == 0 and args.json:
        import dataclasses

        print_json(dataclasses.asdict(result) if dataclasses.is_dataclass(result) else vars(result))
    elif world_info()[1] == 0:
        print(f"checkpoint: {result.checkpoint}")
        print(f"record: {result.record}")
        print(f"steps: {result.steps} x global batch {result.global_batch} = {result.samples_seen:,} samples; "
              f"{result.samples_per_second:.1f} samples/s, {result.seconds:.1f} s")
    return 0
