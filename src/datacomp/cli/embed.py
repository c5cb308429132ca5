"""`datacomp embed`: CLIP embeddings and similarity scores for a pool without npz files (BYOD)."""

from __future__ import annotations

import argparse
from pathlib import Path

from datacomp.cli import add_parser
from datacomp.cli._common import add_executor_args, executor_from


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "embed", "compute image/text embeddings and CLIP scores for a pool's metadata (BYOD)",
        description="Reads images from the pool's shards (rows matched by uid) and writes, per metadata "
        "parquet, the parquet with clip_<key>_similarity_score columns and the row-aligned npz "
        "(<key>_img, <key>_txt, float16) under --output-dir.\n\n"
        "  datacomp embed --metadata-dir M --shards S --output-dir M2\n"
        "  datacomp embed ... --model b32=ViT-B-32 --checkpoint b32=/path/open_clip.pt",
    )
    p.add_argument("--metadata-dir", type=Path, required=True)
    p.add_argument("--shards", type=Path, required=True, help="folder of webdataset .tar shards with the images")
    p.add_argument("--output-dir", type=Path, required=True, help="where the new parquet + npz files go")
    p.add_argument("--model", action="append", default=None, metavar="KEY=MODEL",
                   help="open_clip model per npz key (repeatable; default b32=datacomp-ref-b32, "
                   "l14=datacomp-ref-l14 with their packaged weights)")
    p.add_argument("--checkpoint", action="append", default=None, metavar="KEY=PATH",
                   help="weights for a --model (open_clip .pt or .safetensors)")
    p.add_argument("--batch-size", type=int, default=256)
    add_executor_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from datacomp.filters.embed import embed_pool, parse_models

    models = parse_models(args.model, args.checkpoint)
    r = embed_pool(args.metadata_dir, args.shards, args.output_dir, models=models, workers=args.workers,
                   batch_size=args.batch_size, executor=executor_from(args))
    print(f"embedded {r['rows']:,} rows ({r['with_image']:,} with an image) in {r['files']} file(s) "
          f"with {', '.join(m['key'] + '=' + m['name'] for m in r['models'])} -> {r['output_dir']}")
    return 0
