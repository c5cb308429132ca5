"""`datacomp embed`: CLIP embeddings and similarity scores for a pool without npz files (BYOD)."""

from __future__ import annotations

import argparse
from pathlib import Path

from datacomp.cli import add_json, add_no_progress, add_output, add_parser, flag, print_json
from datacomp.cli._common import add_executor_args, executor_from


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "embed", "compute image/text embeddings and CLIP scores for a pool's metadata (BYOD)",
        description="Reads images from the pool's shards (rows matched by uid) and writes, per metadata "
        "parquet, the parquet with clip_<key>_similarity_score columns and the row-aligned npz "
        "(<key>_img, <key>_txt, float16) under -o/--output.\n\n"
        "  datacomp embed --metadata-dir M --shards S -o M2 --model b32=ViT-B-32:openai "
        "--model l14=ViT-L-14:openai\n"
        "  datacomp embed ... --model b32=ViT-B-32:/path/open_clip.pt --model l14=hf-hub:ORG/NAME\n\n"
        "Models load through open_clip's factory and cache (HF_HUB_OFFLINE=1: the cache only); on a GPU "
        "encoding runs in batches under AMP. Without --model only the embedded world's pool is accepted "
        "(its reference models datacomp-ref-b32 / datacomp-ref-l14, which any pool may name explicitly).",
    )
    flag(p, "--metadata-dir", hidden=("--metadata_dir",), type=Path, required=True,
         help="the pool's metadata parquets")
    p.add_argument("--shards", type=Path, required=True, help="folder of webdataset .tar shards with the images")
    add_output(p, "--output-dir", "--output_dir", type=Path, required=True, help="where the new parquet + npz files go")
    p.add_argument("--model", action="append", default=None, metavar="KEY=MODEL",
                   help="model per npz key (repeatable): open_clip NAME:TAG, NAME:/path.pt, hf-hub:ORG/NAME or "
                   "datacomp-ref-b32/-l14; required unless the pool is the embedded world's")
    p.add_argument("--checkpoint", action="append", default=None, metavar="KEY=PATH",
                   help="weights for a bare --model architecture name (open_clip .pt or .safetensors)")
    p.add_argument("--batch-size", type=int, default=256, help="images per encoding batch")
    add_executor_args(p)
    add_no_progress(p)
    add_json(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from datacomp.filters.embed import embed_pool, parse_models

    models = parse_models(args.model, args.checkpoint, metadata_dir=args.metadata_dir)
    r = embed_pool(args.metadata_dir, args.shards, args.output, models=models, workers=args.workers,
                   batch_size=args.batch_size, executor=executor_from(args), progress=not args.no_progress)
    if args.json:
        print_json(r)
        return 0
    print(f"embedded {r['rows']:,} rows ({r['with_image']:,} with an image) in {r['files']} file(s) "
          f"with {', '.join(m['key'] + '=' + m['name'] for m in r['models'])} -> {r['output_dir']}")
    return 0
