"""`datacomp dedup`: uids of pool samples that nearly duplicate an evaluation image."""

from __future__ import annotations

import argparse
from pathlib import Path

from datacomp.cli import add_json, add_no_progress, add_output, add_parser, flag, print_json
from datacomp.cli._common import add_executor_args, executor_from


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "dedup", "flag pool samples whose image near-duplicates an evaluation image",
        description="Embeds the evaluation suite's test images with the model behind the pool's l14_img "
        "embeddings and writes the uids of pool samples with cosine >= --threshold to any of them.\n\n"
        "  datacomp dedup --metadata-dir M --eval-suite E -o contaminated.npy\n"
        "  datacomp filter --name basic_filter ... --exclude-uids contaminated.npy",
    )
    flag(p, "--metadata-dir", hidden=("--metadata_dir",), type=Path, required=True,
         help="the pool's metadata (parquet + npz)")
    p.add_argument("--eval-suite", type=Path, required=True, help="CLIP_benchmark-layout evaluation folder")
    add_output(p, type=Path, required=True, help="subset file of flagged uids (.npy)")
    p.add_argument("--threshold", type=float, default=None, help="cosine similarity cut (default: 0.95)")
    p.add_argument("--model", default=None,
                   help="the model behind the pool's l14_img embeddings: open_clip name with a pretrained tag "
                   "(ViT-L-14:openai), NAME:/path/checkpoint.pt or hf-hub:ORG/NAME (default: datacomp-ref-l14, "
                   "only for the embedded world's pool)")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights for a bare --model architecture name")
    p.add_argument("--embedding-key", default="l14_img", help="npz array of the pool's image embeddings")
    add_executor_args(p)
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from datacomp.filters.dedup import DEFAULT_THRESHOLD, dedup
    from datacomp.filters.embed import ModelSpec

    model = None
    if args.model is not None or args.checkpoint is not None:
        model = ModelSpec(args.embedding_key.split("_")[0], args.model or "datacomp-ref-l14",
                          str(args.checkpoint) if args.checkpoint else None)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    s = dedup(args.metadata_dir, args.eval_suite, args.output, threshold=threshold,
              model=model, progress=not args.no_progress,
              embedding_key=args.embedding_key, workers=args.workers,
              executor=executor_from(args))
    if args.json:
        print_json(s)
        return 0
    print(f"{s['flagged']:,} of {s['pool_size']:,} pool samples near-duplicate one of {s['eval_images']:,} "
          f"evaluation images (cosine >= {s['threshold']}) -> {s['output']}")
    for task, n in s["flagged_per_task"].items():
        print(f"  {task}: {n:,}")
    return 0
