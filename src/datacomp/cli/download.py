"""`datacomp download`: pool metadata from the Hub (or your own parquets), then images into shards."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from datacomp.cli import add_json, add_no_progress, add_parser, flag, print_json
from datacomp.cli._common import add_executor_args, executor_from
from datacomp.errors import DataCompError

# Choices, spelled here so that registering the command imports neither the Hub client nor PIL
# (tests/test_cli_conventions.py checks they equal datacomp.pool.hub.HUB_SCALES and datacomp.pool.resize's).
HUB_SCALES = ("small", "medium", "large", "xlarge", "datacomp_1b")
RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")
ENCODE_FORMATS = ("jpg", "png", "webp")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "download", "fetch pool metadata and download images into webdataset shards",
                   description="Fetch a scale's metadata from the Hugging Face Hub (or use --metadata-dir), then "
                               "download every url into img2dataset-layout shards under DATA_DIR/shards. "
                               "Re-running resumes: only shards without a _stats.json are downloaded.")
    p.add_argument("--scale", choices=HUB_SCALES, default="small", help="pool whose metadata is fetched")
    flag(p, "-o", "--output", "--data-dir", dest="data_dir", hidden=("--data_dir",), required=True,
         help="root for metadata/ and shards/ (a local dir or a URL: s3://...)")
    flag(p, "--metadata-dir", hidden=("--metadata_dir",),
         help="parquets to download from (local dir or fsspec URL; BYOD); "
         "default DATA_DIR/metadata, fetched from the Hub when empty")
    flag(p, "--shards-dir", hidden=("--output-dir", "--output_dir"), help="output shard dir (default DATA_DIR/shards)")
    flag(p, "--download-npz", hidden=("--download_npz",), action="store_true", help="also fetch the .npz embeddings")
    flag(p, "--skip-shards", hidden=("--skip_shards",), action="store_true", help="metadata only")
    flag(p, "--overwrite-metadata", hidden=("--overwrite_metadata",), action="store_true",
         help="delete and re-fetch the metadata")
    p.add_argument("--hf-endpoint", help="Hub endpoint (a mirror, or `datacomp synth serve --hub-repo`); "
                                         "default $HF_ENDPOINT or huggingface.co")
    g = p.add_argument_group("images")
    flag(g, "--skip-bbox-blurring", hidden=("--skip_bbox_blurring",), action="store_true",
         help="do not blur face_bboxes")
    add_executor_args(p, ("-j", "--workers"),
                      "shards downloaded at once (when not given: all cores, or the Ray cluster's CPUs)",
                      hidden=("--processes-count", "--processes_count"))
    flag(g, "--thread-count", hidden=("--thread_count",), type=int, default=64, help="concurrent requests per process")
    flag(g, "--number-sample-per-shard", hidden=("--number_sample_per_shard",), type=int, default=10_000,
         help="samples per output shard")
    flag(g, "--image-size", hidden=("--image_size",), type=int, default=512, help="resize target in pixels")
    flag(g, "--resize-mode", hidden=("--resize_mode",), choices=RESIZE_MODES, default="keep_ratio_largest",
         help="img2dataset resize mode")
    flag(g, "--no-resize-only-if-bigger", hidden=("--no_resize_only_if_bigger",), action="store_true",
         help="also upscale small images")
    flag(g, "--encode-format", hidden=("--encode_format",), choices=ENCODE_FORMATS, default="jpg",
         help="image format written to the shards")
    flag(g, "--encode-quality", hidden=("--encode_quality",), type=int, default=95, help="JPEG/WebP quality")
    g.add_argument("--reencode", choices=("always", "auto"), default="always",
                   help="always re-encode (img2dataset); auto keeps downloaded bytes when nothing changes them")
    g.add_argument("--verify-hash", action="store_true",
                   help="compare sha256 of downloaded bytes with the metadata's sha256 (mismatches are flagged, "
                        "not dropped)")
    s = p.add_argument_group("network and safety")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds per connect/read")
    s.add_argument("--retries", type=int, default=2, help="extra attempts after a transient failure")
    s.add_argument("--max-redirects", type=int, default=5, help="redirects followed per url")
    s.add_argument("--max-bytes", type=int, default=32 * 1024 * 1024, help="response size cap")
    s.add_argument("--max-pixels", type=int, default=89_478_485, help="decompression-bomb cap")
    s.add_argument("--allow-private-addresses", action="store_true",
                   help="allow urls resolving to loopback/private/link-local addresses (local servers, tests)")
    s.add_argument("--user-agent-token", help="X-Robots-Tag directives scoped to this token also apply")
    s.add_argument("--disallowed-header-directives", default="noai,noimageai,noindex,noimageindex,noml",
                   help="comma-separated X-Robots-Tag directives that opt an image out")
    s.add_argument("--allow-network", action="append", default=[], metavar="CIDR",
                   help="allow this non-public network only (repeatable), e.g. 127.0.0.0/8")
    s.add_argument("--exclude-shard", type=int, action="append", default=[], metavar="ID",
                   help="do not download this output shard id (repeatable)")
    p.add_argument("--yes", action="store_true", help="start even if the estimate exceeds free disk space")
    add_no_progress(p)
    add_json(p, "the download summary")
    p.set_defaults(func=run)


def _info(args: argparse.Namespace):  # noqa: ANN202 - a text stream
    """Where progress notes go: stdout, or stderr when --json keeps stdout for the result."""
    import sys

    return sys.stderr if args.json else sys.stdout


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def run(args: argparse.Namespace) -> int:
    from datacomp.console import console
    from datacomp.pool.download import DownloadOptions, download, estimate_bytes, list_metadata
    from datacomp.pool.http import FetchConfig
    from datacomp.pool.hub import fetch_metadata, remote_size
    from datacomp.pool.resize import ImageConfig
    from datacomp.storage import as_location

    data_dir = as_location(args.data_dir)
    metadata = args.metadata_dir or str(data_dir / "metadata")
    shards = as_location(args.shards_dir) if args.shards_dir else data_dir / "shards"
    if args.metadata_dir is None and not data_dir.is_local:
        if not (data_dir / "metadata").isdir() or args.overwrite_metadata:
            raise DataCompError(
                f"{data_dir}: fetching the pool's metadata from the Hub writes local files; fetch it into a local "
                "--data-dir with --skip-shards, upload metadata/ there, or pass --metadata-dir"
            )
    elif args.metadata_dir is None:
        mdir = Path(metadata)
        need_parquet = args.overwrite_metadata or not any(mdir.glob("*.parquet"))
        need_npz = args.download_npz and not any(mdir.glob("*.npz"))
        if need_parquet or need_npz or args.overwrite_metadata:
            rs = remote_size(args.scale, args.download_npz, args.hf_endpoint)
            print(f"metadata: {rs['files']} file(s), {_gb(rs['bytes'])} from the Hub -> {mdir}", file=_info(args))
            fetch_metadata(args.scale, mdir, download_npz=args.download_npz, overwrite=args.overwrite_metadata,
                           endpoint=args.hf_endpoint)
    if args.skip_shards:
        if args.json:
            print_json({"metadata_dir": str(metadata), "shards": None})
        else:
            print(f"metadata in {metadata}; --skip-shards given, no images downloaded")
        return 0
    if args.image_size <= 0 or args.thread_count <= 0 or (args.workers is not None and args.workers <= 0):
        raise DataCompError("--image-size, --thread-count and --processes-count must be positive")
    image = ImageConfig(image_size=args.image_size, resize_mode=args.resize_mode,
                        resize_only_if_bigger=not args.no_resize_only_if_bigger, encode_format=args.encode_format,
                        encode_quality=args.encode_quality, reencode=args.reencode, max_pixels=args.max_pixels,
                        blur_faces=not args.skip_bbox_blurring)
    fetch = FetchConfig(timeout=args.timeout, retries=args.retries, max_redirects=args.max_redirects,
                        max_bytes=args.max_bytes, allow_private=args.allow_private_addresses,
                        user_agent_token=args.user_agent_token, allowed_networks=tuple(args.allow_network),
                        disallowed_directives=tuple(d.strip() for d in args.disallowed_header_directives.split(",")
                                                    if d.strip()))
    options = DownloadOptions(fetch=fetch, image=image, thread_count=args.thread_count,
                              samples_per_shard=args.number_sample_per_shard,
                              bbox_col=None if args.skip_bbox_blurring else "face_bboxes",
                              verify_hash=args.verify_hash, progress=not args.no_progress)
    files = list_metadata(metadata)
    est = estimate_bytes(files, image)
    shards.mkdirs()
    free = shutil.disk_usage(shards.path).free if shards.is_local else None
    print(f"images: {est['rows']:,} rows in {est['files']} parquet(s); estimated shard size {_gb(est['bytes'])} "
          f"(free: {_gb(free) if free is not None else 'object store'}) -> {shards}", file=_info(args))
    if free is not None and est["bytes"] > free and not args.yes:
        raise DataCompError(f"{shards}: estimated {_gb(est['bytes'])} needed but only {_gb(free)} free; "
                            "free space, choose another --data-dir, or pass --yes to start anyway")
    summary = download(metadata, shards.url, options, processes=args.workers or os.cpu_count() or 1,
                       executor=executor_from(args),
                       skip_shards=tuple(args.exclude_shard), progress=not args.no_progress)
    if args.json:
        print_json(summary)
    else:
        _print_summary(console(), summary)
    return 0


def _print_summary(con, summary: dict) -> None:  # noqa: ANN001 - rich console
    from rich.table import Table

    run = summary["this_run"]
    t = Table(title=f"download summary ({summary['output_dir']})", show_header=True)
    t.add_column("")
    t.add_column("all shards", justify="right")
    t.add_column("this run", justify="right")
    rows = [("shards", "shards"), ("samples", "count"), ("successes", "successes"),
            ("failed_to_download", "failed_to_download"), ("failed_to_resize", "failed_to_resize")]
    for label, k in rows:
        t.add_row(label, f"{summary[k]:,}", f"{run[k]:,}")
    t.add_row("success rate", f"{summary['success_rate']:.1%}", f"{run['success_rate']:.1%}")
    for kind in summary["failure_kinds"]:
        t.add_row(f"  failed: {kind}", f"{summary['failure_kinds'][kind]:,}",
                  f"{run['failure_kinds'].get(kind, 0):,}")
    t.add_row("bytes downloaded", _gb(summary["bytes_downloaded"]), _gb(run["bytes_downloaded"]))
    t.add_row("bytes written", _gb(summary["bytes_written"]), _gb(run["bytes_written"]))
    if "sha256_mismatches" in summary:
        t.add_row("sha256 mismatches", f"{summary['sha256_mismatches']:,} ({summary['sha256_mismatch_rate']:.1%})",
                  f"{run.get('sha256_mismatches', 0):,}")
    t.add_row("images/s", "", f"{run['images_per_s']:,.1f} ({run['seconds']:.1f} s)")
    con.print(t)
