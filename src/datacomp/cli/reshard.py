"""`datacomp reshard`: a subset file + the pool's shards -> training shards (or a no-copy uid filter)."""

from __future__ import annotations

import argparse
from pathlib import Path

from datacomp.cli import add_json, add_no_progress, add_output, add_parser, flag, print_json
from datacomp.cli._common import add_executor_args, executor_from


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "reshard", "write the samples of a subset file as new webdataset shards",
        description=(
            "Write exactly the subset's samples (a uid listed k times is written k times) from the pool's\n"
            "img2dataset shards into NNNNNNNN.tar + NNNNNNNN_stats.json, sample_ids.npy and meta.json.\n"
            "Shards without a selected sample are skipped using their parquet; member bytes are copied\n"
            "undecoded. A killed run resumes when re-run with the same arguments."
        ),
    )
    flag(p, "-i", "--input-dir", hidden=("--input_dir",), action="append", required=True,
         help="dir of input shards (repeat for several); shards are found by listing")
    add_output(p, "--output-dir", "--output_dir", required=True, help="output folder of the new shards")
    flag(p, "-s", "--subset-file", hidden=("--subset_file",), required=True, help="sorted u8,u8 uids (.npy or raw)")
    flag(p, "--shard-size", hidden=("--shard_size",), type=int, default=10_000, help="samples per output shard")
    flag(p, "--shuffle-bufsize", hidden=("--shuffle_bufsize",), type=int, default=0,
                   help="shuffle buffer per output shard (0 keeps input order); also permutes input shards")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    p.add_argument("--blur", action="store_true", help="blur faces using face_bboxes (re-encodes those jpgs)")
    p.add_argument("--blur-metadata", type=Path, default=None,
                   help="metadata parquet file or dir with uid + face_bboxes (default: each sample's json)")
    p.add_argument("--blur-quality", type=int, default=95, help="JPEG quality of re-encoded blurred images")
    p.add_argument("--no-copy", action="store_true",
                   help="write no shards: meta.json declares a training-time uid filter over the input shards")
    p.add_argument("--overwrite", action="store_true", help="delete everything in the output dir first")
    add_executor_args(p)
    add_no_progress(p)
    add_json(p, "the summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datacomp.reshard import reshard

    s = reshard(
        args.input_dir, args.output, args.subset_file, shard_size=args.shard_size,
        shuffle_bufsize=args.shuffle_bufsize, seed=args.seed, blur=args.blur, blur_metadata=args.blur_metadata,
        blur_quality=args.blur_quality, overwrite=args.overwrite, workers=args.workers, no_copy=args.no_copy,
        executor=executor_from(args),
        progress=not args.no_progress,
    )
    if args.json:
        print_json(s)
        return 0
    print(f"subset: {s['subset_uids']:,} uids ({s['subset_duplicates']:,} repeats)   "
          f"pool: {s['pool_samples']:,} samples in {s['input_shards']:,} shards "
          f"({s['input_shards_selected']:,} hold selected samples)")
    if s["missing_uids"]:
        print(f"missing: {s['missing_uids']:,} subset uids are not in the pool "
              f"(listed in {s['output_dir']}/missing_uids.txt)")
    if args.no_copy:
        print(f"no-copy: uid filter over {len(s['uid_filter']['shards']):,} shards "
              f"({s['output_count']:,} samples) written to {s['output_dir']}/meta.json")
        return 0
    rate = f", {s['samples_per_s']:,.0f} samples/s, {s['mb_per_s']:,.1f} MB/s" if s.get("samples_per_s") else ""
    resumed = f" ({s['output_shards_resumed']} already complete)" if s.get("output_shards_resumed") else ""
    blur = f", {s['blur_count']:,} images blurred" if args.blur else ""
    print(f"wrote: {s['output_count']:,} samples in {s['output_shard_count']:,} shards{resumed}{blur} "
          f"to {s['output_dir']} in {s['seconds']:.1f}s{rate}")
    return 0
