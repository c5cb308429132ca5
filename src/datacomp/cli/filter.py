"""`datacomp filter`: select a subset of the pool with a DataComp baseline, SQL or a user filter."""

from __future__ import annotations

import argparse
from pathlib import Path

from datacomp.cli import add_json, add_no_progress, add_output, add_parser, flag, print_json
from datacomp.cli._common import add_executor_args, executor_from


def signal_help() -> str:
    """The ``--where`` columns, generated from the signal registry (plug-ins passed so far included)."""
    from datacomp.filters.registry import list_signals
    from datacomp.filters.signals import DERIVED, META_COLUMNS

    cols = [*META_COLUMNS, *DERIVED]
    for s in list_signals():
        cols += [f"{c} ({s.name}{', pixels' if s.images else ''}{', row-lazy' if s.row_lazy else ''})"
                 for c in s.column_names]
    return "signal columns for --where (`datacomp filter-signals --list` describes them): " + ", ".join(cols)


def _plugin_args(argv: list[str] | None = None) -> list[str]:
    """``--plugin FILE`` values on the command line (so help lists their signals too)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    out = []
    for i, a in enumerate(argv):
        if a == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith("--plugin="):
            out.append(a.split("=", 1)[1])
    return out


def _with_signal_help(p: argparse.ArgumentParser) -> None:
    """Append the signal column list to ``p``'s help, generated only when help is shown."""
    base = p.format_help

    def format_help() -> str:
        from datacomp.errors import DataCompError
        from datacomp.filters.registry import load_plugins

        try:
            load_plugins(_plugin_args())
            extra = signal_help()
        except DataCompError as e:
            extra = f"(signals unavailable: {e})"
        return base() + "\n" + extra + "\n"

    p.format_help = format_help  # type: ignore[method-assign]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub, "filter", "select a subset of the pool (DataComp baselines, SQL over cached signals, your filter)",
        description="Write a sorted u8,u8 subset .npy (e.g. s.npy) plus s.summary.json and s.summary.md.\n\n"
        "  datacomp filter --name clip_score --arch l14 --fraction 0.3 --metadata-dir M -o s.npy\n"
        "  datacomp filter --where \"lang = 'en' AND text_words > 2\" --metadata-dir M -o s.npy\n\n"
        "Helpers: `datacomp filter-centroids`, `filter-targets`, `filter-signals`, `filter-list` (the old\n"
        "spellings `datacomp filter build-centroids|build-targets|signals|list ...` still work).",
    )
    _with_signal_help(p)
    _filter_args(p)
    p.set_defaults(func=_run)

    q = add_parser(sub, "filter-centroids", "k-means centroids of the pool's l14 image embeddings (faiss); "
                   "also `filter build-centroids`")
    flag(q, "--metadata-dir", hidden=("--metadata_dir",), required=True, help="the pool's metadata (parquet + npz)")
    add_output(q, "--save_path", type=Path, required=True, help="centroids .npy (k, dim)")
    flag(q, "--num-clusters", hidden=("--num_clusters",), type=int, default=None,
         help="k (default: pool size / 128, the original's 100k per 12.8M ratio, at most 100000)")
    flag(q, "--embedding-key", hidden=("--embedding_key",), default="l14_img", help="npz array to cluster")
    flag(q, "--sample-ratio", hidden=("--sample_ratio",), type=float, default=None,
         help="per-file sample ratio (default: every point; the original used 0.3 for large, 0.03 for xlarge)")
    flag(q, "--disable-caption-filtering", hidden=("--disable_caption_filtering",), action="store_true",
         help="cluster every sample, not only those passing the image-based caption pre-filter")
    q.add_argument("--niter", type=int, default=20, help="k-means iterations")
    q.add_argument("--seed", type=int, default=0, help="seed of the sampling and the k-means initialisation")
    q.add_argument("--compat", action="store_true",
                   help="L2 k-means with sampling with replacement, as the original (default: spherical)")
    q.add_argument("--signals-dir", default=None, help="signals cache (default: <output dir>/signals)")
    add_executor_args(q, ("-j", "--workers"), hidden=("--num_workers",))
    add_no_progress(q)
    add_json(q)
    q.set_defaults(func=_build_centroids)

    q = add_parser(sub, "filter-targets", "embed reference images (ImageNet-1k train) for image_based's --targets; "
                   "also `filter build-targets`")
    q.add_argument("--images", type=Path, required=True, help="folder of image files or .tar shards")
    q.add_argument("--model", required=True,
                   help="the model behind the pool's l14_img: ViT-L-14:openai, NAME:/path.pt, hf-hub:ORG/NAME")
    add_output(q, type=Path, required=True, help="targets .npy (n, d), float32")
    q.add_argument("--batch-size", type=int, default=256, help="images per batch")
    add_no_progress(q)
    add_json(q)
    q.set_defaults(func=_build_targets)

    q = add_parser(sub, "filter-signals", "compute the per-sample signals cache for every metadata file "
                   "(or --list them); also `filter signals`")
    q.add_argument("--list", action="store_true", help="describe the registered signals and exit")
    flag(q, "--metadata-dir", hidden=("--metadata_dir",), default=None, help="the pool's metadata (parquet + npz)")
    flag(q, "-o", "--output", "--signals-dir", dest="signals_dir", default=None,
         help="signals cache folder to write")
    flag(q, "--groups", hidden=("--signals",), default=None,
         help="comma-separated signals (default: every registered one not reading image pixels, "
         "except the methods' on-demand signals)")
    q.add_argument("--synsets", type=Path, default=None, help="text_based entity list (wnids or concept names)")
    q.add_argument("--centroids", type=Path, default=None, help="(k, d) centroids .npy/.pt for the image_based signal")
    q.add_argument("--compat", action="store_true", help="compute the signals as the original baselines.py does")
    q.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a method parameter for the methods' signals (repeatable; see docs/methods/)")
    _signal_input_args(q)
    add_executor_args(q, ("-j", "--workers"), hidden=("--num_workers",))
    add_no_progress(q)
    add_json(q)
    q.set_defaults(func=_signals)

    q = add_parser(sub, "filter-list", "the registered filters (baselines, --plugin files, installed plug-ins); "
                   "also `filter list`")
    q.add_argument("--plugin", action="append", default=[], type=Path,
                   help="Python file registering filters (repeatable)")
    add_json(q)
    q.set_defaults(func=_list)


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None, help="baseline or registered filter (see `datacomp filter-list`)")
    flag(p, "--metadata-dir", hidden=("--metadata_dir",), help="the pool's metadata (parquet + npz)")
    add_output(p, "--save_path", help="subset file to write (.npy, sorted u8,u8)")
    p.add_argument("--threshold", type=float, default=None, help="CLIP-score threshold (clip_score filters)")
    p.add_argument("--fraction", type=float, default=None, help="keep this top fraction by CLIP score")
    p.add_argument("--arch", choices=("b32", "l14"), default=None, help="which CLIP score")
    flag(p, "--image-based-scale", hidden=("--image_based_scale",), default=None,
         help="use ~/.cache/datacomp/<scale>_centroids_l14.pt (the official centroids)")
    p.add_argument("--compat", action="store_true",
                   help="reproduce the original baselines.py selection exactly (see docs/filter.md)")
    p.add_argument("--where", default=None, help="SQL boolean expression over signal columns (DuckDB)")
    p.add_argument("--plugin", action="append", default=[], type=Path,
                   help="Python file registering filters (@register_filter) and signals (@register_signal); repeatable")
    p.add_argument("--exclude-uids", default=None,
                   help="subset file of uids to drop (e.g. from `datacomp dedup`)")
    p.add_argument("--synsets", type=Path, default=None,
                   help="text_based entity list: wnids or concept names (default: the world's concepts.txt, "
                   "else ImageNet-21k from timm)")
    p.add_argument("--centroids", type=Path, default=None, help="(k, d) centroids .npy/.pt for image_based")
    p.add_argument("--targets", type=Path, default=None,
                   help="reference (ImageNet-1k) l14 embeddings: .npy/.npz, or the dir holding the five official "
                        "in1k_clip_vit_l14_{0..4}.pt (default: the world's assets)")
    flag(p, "--num-clusters", hidden=("--num_clusters",), type=int, default=None,
         help="k when centroids are built automatically")
    p.add_argument("--seed", type=int, default=0, help="seed of automatically built centroids")
    p.add_argument("--signals-dir", default=None, help="signals cache (default: <output dir>/signals)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a method parameter, e.g. semdedup.eps=0.05 (repeatable; see docs/methods/)")
    _signal_input_args(p, plugin=False)
    add_executor_args(p, ("-j", "--workers"), "parallel files (default: cores)", hidden=("--num_workers",))
    add_no_progress(p)
    add_json(p, "the summary")


def _signal_input_args(p: argparse.ArgumentParser, plugin: bool = True) -> None:
    if plugin:
        p.add_argument("--plugin", action="append", default=[], type=Path,
                       help="Python file registering filters/signals (repeatable)")
    p.add_argument("--shards-dir", type=Path, default=None,
                   help="the pool's .tar shards, for signals reading image pixels "
                   "(default: <metadata-dir>/../shards when it exists)")
    p.add_argument("--signal-asset", action="append", default=[], metavar="NAME=FILE",
                   help="a named input file a plug-in signal declares (repeatable)")


def _assets(values: list[str], flag: str = "--signal-asset", form: str = "NAME=FILE") -> dict[str, str]:
    from datacomp.errors import DataCompError

    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise DataCompError(f"{flag} {v!r}: expected {form}")
        out[name] = path
    return out


def _run(args: argparse.Namespace) -> int:
    from datacomp.errors import DataCompError
    from datacomp.filters import run_filter

    if args.metadata_dir is None or args.output is None:
        raise DataCompError("datacomp filter needs --metadata-dir and -o/--output (helpers: datacomp filter-list, "
                            "filter-signals, filter-centroids, filter-targets)")
    summary = run_filter(
        args.name, args.metadata_dir, args.output, threshold=args.threshold, fraction=args.fraction,
        arch=args.arch, compat=args.compat, where=args.where, plugins=[str(p) for p in args.plugin],
        exclude_uids=args.exclude_uids, synsets=args.synsets, centroids=args.centroids, targets=args.targets,
        image_based_scale=args.image_based_scale, num_clusters=args.num_clusters, seed=args.seed,
        signals_dir=args.signals_dir, shards_dir=args.shards_dir, signal_assets=_assets(args.signal_asset),
        method_params=_assets(args.param, "--param", "NAME=VALUE"), workers=args.workers, executor=executor_from(args),
    )
    if args.json:
        print_json(summary)
    else:
        print_summary(summary)
    return 0


def print_summary(s: dict) -> None:
    from rich.table import Table

    from datacomp.console import console

    t = Table(title=f"filter {s['name']} ({s['mode']})")
    t.add_column("")
    t.add_column("rows", justify="right")
    t.add_column("share of pool", justify="right")
    pool = max(1, s["pool_size"])
    t.add_row("pool", f"{s['pool_size']:,}", "100%")
    for rule, n in s["removed"].items():
        t.add_row(f"removed by {rule}", f"{n:,}", f"{100 * n / pool:.2f}%")
    t.add_row("kept", f"{s['kept']:,}", f"{100 * s['fraction']:.2f}%", style="bold")
    c = console()
    c.print(t)
    if s.get("threshold") is not None:
        c.print(f"score threshold: {s['threshold']:.6g}")
    c.print(f"wrote {s['output']} (+ .summary.json, .summary.md) in {s['seconds']:.1f} s")


def _build_centroids(args: argparse.Namespace) -> int:
    from datacomp.filters import build_centroids

    r = build_centroids(
        args.metadata_dir, args.output, num_clusters=args.num_clusters, embedding_key=args.embedding_key,
        sample_ratio=args.sample_ratio, caption_filter=not args.disable_caption_filtering, seed=args.seed,
        niter=args.niter, compat=args.compat, signals_dir=args.signals_dir, workers=args.workers,
        executor=executor_from(args),
    )
    if args.json:
        print_json(r)
        return 0
    print(f"wrote {r['output']}: {r['num_clusters']} centroids of dim {r['dim']} from {r['points']:,} points")
    return 0


def _build_targets(args: argparse.Namespace) -> int:
    from datacomp.filters.embed import build_targets

    r = build_targets(args.images, args.output, args.model, batch_size=args.batch_size)
    if args.json:
        print_json(r)
        return 0
    print(f"wrote {r['output']}: {r['images']:,} reference embeddings of dim {r['dim']} with {r['model']}")
    return 0


def _signals(args: argparse.Namespace) -> int:
    from datacomp.errors import DataCompError
    from datacomp.filters import compute_signals, list_signals, load_plugins

    if args.list:
        load_plugins([str(p) for p in args.plugin])
        if args.json:
            print_json([{"name": s.name, "columns": dict(s.columns), "meta": list(s.meta), "arrays": list(s.arrays),
                         "images": s.images, "assets": list(s.assets), "row_lazy": s.row_lazy,
                         "description": s.description} for s in list_signals()])
            return 0
        for s in list_signals():
            inputs = [*s.meta, *(f"npz:{a}" for a in s.arrays), *(["images"] if s.images else []),
                      *(f"asset:{a}" for a in s.assets)]
            cols = ", ".join(f"{c} {t}" for c, t in s.columns)
            lazy = " [row-lazy]" if s.row_lazy else ""
            print(f"{s.name:18s} {cols}  <- {', '.join(inputs) or '-'}{lazy}\n{'':18s} {s.description}")
        return 0
    if args.metadata_dir is None or args.signals_dir is None:
        raise DataCompError("datacomp filter-signals needs --metadata-dir and -o/--signals-dir (or --list)")
    groups = None if args.groups is None else [g for g in args.groups.split(",") if g]
    r = compute_signals(args.metadata_dir, args.signals_dir, groups, synsets=args.synsets,
                        centroids=args.centroids, compat=args.compat, workers=args.workers,
                        executor=executor_from(args), plugins=[str(p) for p in args.plugin], shards_dir=args.shards_dir,
                        signal_assets=_assets(args.signal_asset),
                        method_params=_assets(args.param, "--param", "NAME=VALUE"), progress=not args.no_progress)
    if args.json:
        print_json(r)
        return 0
    print(f"signals for {r['rows']:,} rows in {r['files']} file(s) under {r['signals_dir']} "
          f"({r['computed_files']} file(s) computed now)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from datacomp.filters import list_filters, load_plugins

    load_plugins([str(p) for p in args.plugin])
    if args.json:
        print_json([{"name": f.name, "description": f.description} for f in list_filters()])
        return 0
    for f in list_filters():
        print(f"{f.name:36s} {f.description}")
    return 0
