"""``run_filter``: plan one task per metadata parquet, resume, select, write the subset + summary.

Steps: (1) for ``--fraction``, find the global threshold exactly with bounded memory
(:mod:`datacomp.filters.threshold`); (2) one task per file computes the cached signals its rules
still miss (only those groups; language ID only for the rows the other rules keep), applies the
rules and writes that file's kept uids, so a killed run resumes; (3) concatenate, drop
``--exclude-uids``, sort, write the ``u8,u8`` ``.npy`` and the summary (JSON and markdown).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.artifacts import summary_path, world_assets
from datacomp.engine import Executor, ParentAndPoolExecutor, Task, ThreadExecutor, resolve_executor, run_tasks
from datacomp.errors import DataCompError
from datacomp.filters import metadata as md
from datacomp.filters import threshold as th
from datacomp.filters.registry import FilterParams, apply, columns_needed, get_filter, get_signal, load_plugins
from datacomp.filters.signals import (
    ALL_COLUMNS,
    SignalConfig,
    column_type,
    default_signals_dir,
    ensure_signals,
    groups_for,
    load_columns,
    missing_groups,
    signal_state,
    signals_task,
)
from datacomp.io import file_fingerprint, locks_output, write_json_atomic
from datacomp.storage import Location, as_location
from datacomp.uids import UID_DTYPE, merge_subset_files, read_subset, sort_uids

log = logging.getLogger(__name__)

WHERE = "where"
SCALE_CENTROIDS = ("small", "medium", "large", "xlarge")


def where_columns(where: str) -> list[str]:
    """Signal columns an SQL expression mentions (so only those are loaded or computed)."""
    return [c for c in ALL_COLUMNS if re.search(rf"\b{re.escape(c)}\b", where)]


def check_args(name: str | None, fdef: Any, threshold: float | None, fraction: float | None,
               arch: str | None, image_based_scale: str | None) -> None:
    """The original's ``check_args`` (minus the GPU requirement)."""
    uses_score = bool(fdef and fdef.uses_score)
    if fdef is not None and (fdef.rank_column or fdef.fraction_option):
        if fdef.fraction_option and threshold is not None:
            raise DataCompError(f"{name}: give --fraction (the share to keep), not --threshold")
        if fdef.rank_column and threshold is not None and fraction is not None:
            raise DataCompError(f"{name}: give one of --threshold or --fraction, not both")
        if fdef.rank_column and not fdef.rank_optional and threshold is None and fraction is None:
            raise DataCompError(f"{name}: give --fraction (the top share to keep) or --threshold")
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise DataCompError(f"--fraction must be within [0, 1], got {fraction}")
        if arch not in (None, "b32", "l14"):
            raise DataCompError(f"{name}: --arch must be b32 or l14")
    elif uses_score:
        if (threshold is None) == (fraction is None):
            raise DataCompError(f"{name}: give exactly one of --threshold or --fraction")
        if arch not in ("b32", "l14"):
            raise DataCompError(f"{name}: --arch b32 or --arch l14 is required")
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise DataCompError(f"--fraction must be within [0, 1], got {fraction}")
    elif threshold is not None or fraction is not None or arch is not None:
        raise DataCompError(f"{name or '--where'}: --threshold/--fraction/--arch only apply to clip_score filters")
    if image_based_scale is not None:
        if not (fdef and fdef.image_based):
            raise DataCompError(f"{name}: --image-based-scale only applies to image_based filters")
        if image_based_scale not in SCALE_CENTROIDS:
            raise DataCompError(f"--image-based-scale must be one of {', '.join(SCALE_CENTROIDS)}")


@locks_output("output")
def run_filter(
    name: str | None,
    metadata_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    threshold: float | None = None,
    fraction: float | None = None,
    arch: str | None = None,
    compat: bool = False,
    where: str | None = None,
    plugins: list[str] | tuple[str, ...] = (),
    exclude_uids: str | os.PathLike[str] | None = None,
    synsets: str | os.PathLike[str] | None = None,
    centroids: str | os.PathLike[str] | None = None,
    targets: str | os.PathLike[str] | None = None,
    image_based_scale: str | None = None,
    num_clusters: int | None = None,
    seed: int = 0,
    signals_dir: str | os.PathLike[str] | None = None,
    shards_dir: str | os.PathLike[str] | None = None,
    signal_assets: dict[str, str] | None = None,
    method_params: dict[str, str] | None = None,
    workers: int | None = None,
    executor: str | Executor | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Select a subset of the pool with a baseline, a registered filter and/or an SQL ``where``.

    One run per output at a time (a second gets a one-line error): runs of one config share the work
    folder of temporaries.
    """
    started = time.time()
    metadata_dir = as_location(metadata_dir)
    output = as_location(output)
    output.check_bucket()  # before any work: a missing bucket is one line now, not after the tasks
    load_plugins(list(plugins))
    if name is None and not where:
        raise DataCompError("give a filter --name, a --where expression, or both")
    fdef = get_filter(name) if name else None
    check_args(name, fdef, threshold, fraction, arch, image_based_scale)
    files = md.list_parquets(metadata_dir)
    sdir = as_location(signals_dir or default_signals_dir(output))
    assets = world_assets(metadata_dir)
    exe = resolve_executor(executor, workers, ThreadExecutor)  # (the passes below are GIL-free reads)
    options = _method_options(fdef, method_params, fraction, seed, num_clusters)
    if fdef is not None and fdef.fraction_option:
        fraction = None  # (the method's global signal takes it)
    params = FilterParams(compat=compat, arch=arch, threshold=threshold, extra=dict(options))

    # Inputs of the parameterised signals (named assets, the pool's shards for pixel signals).
    wanted = groups_for([*(columns_needed(fdef, params) if fdef else ()), *(where_columns(where) if where else ())])
    needs = {a for g in wanted for a in get_signal(g).assets}
    synsets_file = None
    if fdef and fdef.needs_synsets or "synsets" in needs:
        synsets_file = _resolve_synsets(synsets, assets)
    centroids_file = None
    if fdef and fdef.image_based or "centroids" in needs:
        centroids_file = _resolve_centroids(
            centroids, image_based_scale, metadata_dir, sdir, compat, num_clusters, seed, workers, executor)
    pixels = [g for g in wanted if get_signal(g).images]
    extra = dict(signal_assets or {})
    if "targets" in needs and "targets" not in extra:
        extra["targets"] = str(_resolve_targets(targets, assets))
    cfg = SignalConfig(str(sdir), str(synsets_file) if synsets_file else None,
                       str(centroids_file) if centroids_file else None, extra=extra,
                       shards_dir=str(resolve_shards_dir(shards_dir, metadata_dir, pixels)) if pixels else None,
                       options=options)
    prepare_global(wanted, metadata_dir, files, cfg, executor, workers)
    if fdef and fdef.image_based:
        from datacomp.filters.clusters import load_matrix, target_clusters

        tfile = _resolve_targets(targets, assets)
        ref = load_matrix(tfile, "target (ImageNet) embeddings")
        cents = load_matrix(centroids_file, "centroids")  # type: ignore[arg-type]
        if ref.shape[1] != cents.shape[1]:
            raise DataCompError(
                f"{tfile}: target embeddings have dimension {ref.shape[1]} but the centroids ({centroids_file}) "
                f"have {cents.shape[1]}; use l14 image embeddings for both"
            )
        params = replace(params, targets=target_clusters(ref, cents, "dot" if compat else "l2"))
        log.info("%d target clusters of %d (from %s)", params.targets.size, cents.shape[0], tfile)  # type: ignore[union-attr]

    rows = [md.num_rows(f) for f in files]
    total = int(sum(rows))
    if fraction is not None:
        rank = fdef.rank_column(params) if fdef is not None and fdef.rank_column else None
        col = rank or f"clip_{arch}_similarity_score"
        if total == 0:
            cut = th.Cut(np.inf, 0)
        elif rank:
            cut = th.exact_cut(files, col, total, fraction, exe, cfg)
        elif compat:
            cut = th.compat_cut(files, col, total, fraction, exe)
        else:
            cut = th.exact_cut(files, col, total, fraction, exe)
        params = replace(params, cut=cut, threshold=cut.threshold)
        log.info("fraction %.4g of %d rows -> threshold %.6g", fraction, total, cut.threshold)

    columns = list(columns_needed(fdef, params)) if fdef else []
    if where:
        columns += where_columns(where)
    # Signals still missing are computed inside the filter tasks (only the groups, and for language
    # ID only the rows, the rules need); then the tasks are CPU-bound in Python-holding code
    # (fastText, CLD3, WordNet) and run in processes. Otherwise they only read columns and run
    # pyarrow/numpy kernels, which release the GIL: threads beat processes that pay a second of
    # start-up each.
    groups = groups_for(columns)
    cold = any(signal_state(f, g, cfg) == "missing" for f in files for g in groups)

    config = {"name": name, "metadata_dir": str(metadata_dir.resolve()), "compat": compat, "arch": arch,
              "threshold": threshold, "fraction": fraction, "where": where, "plugins": [str(p) for p in plugins],
              "synsets": cfg.synsets_file, "centroids": cfg.centroids_file, "assets": cfg.extra,
              "shards_dir": cfg.shards_dir, "options": options,
              "resolved_threshold": params.threshold, "files": [f.name for f in files]}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    work = output.with_name(f".{output.name}.work-{digest}")
    tasks = [
        Task(f.stem, filter_task, (str(f), str(work), name, where, params, cfg, list(plugins)), weight=n)
        for f, n in zip(files, rows)
    ]
    fexe = resolve_executor(executor, exe.workers, ParentAndPoolExecutor if cold else ThreadExecutor)
    results = run_tasks(tasks, fexe, state_dir=str(work / "state"), desc=f"filter {name or WHERE}", unit="row",
                        progress=progress)

    removed: dict[str, int] = {}
    failing: dict[str, int] = {}
    for r in results:
        for k, v in r.stats["removed"].items():
            removed[k] = removed.get(k, 0) + int(v)
        for k, v in r.stats["failing"].items():
            failing[k] = failing.get(k, 0) + int(v)
    # Each task wrote its kept uids sorted; a streaming k-way merge writes the subset (bounded memory).
    excl = read_subset(exclude_uids, validate=False) if exclude_uids else None
    merged = merge_subset_files([work / "kept" / f"{f.stem}.npy" for f in files], output, excl)
    n_kept = merged.written
    dups = None
    if merged.duplicates:  # the format is sorted and unique: each uid is written once
        dups = {"count": merged.duplicates, "example": merged.example,
                "files": [next(f.name for f in files if f"{f.stem}.npy" == as_location(p).name) for p in merged.files]}
        log.warning("%d kept uid(s) appear more than once in the metadata (e.g. %s in %s); the subset "
                    "lists each once", dups["count"], dups["example"], " and ".join(dups["files"]))
    if exclude_uids:
        removed["excluded"] = failing["excluded"] = merged.excluded
    summary = {
        "name": name or WHERE,
        "mode": "compat" if compat else "default",
        "output": str(output),
        "pool_size": total,
        "kept": n_kept,
        "fraction": (n_kept / total) if total else 0.0,
        "removed": removed,
        "failing": failing,
        "threshold": params.threshold if params.threshold is None or np.isfinite(params.threshold) else None,
        "target_clusters": int(params.targets.size) if params.targets is not None else None,
        "duplicate_uids": dups,
        "config": config,
        "signals_dir": str(sdir),
        "files": len(files),
        "executor": type(fexe).__name__,
        "inputs": [file_fingerprint(f) for f in files],
        "exclude_uids": str(exclude_uids) if exclude_uids else None,
        "seconds": round(time.time() - started, 3),
    }
    write_json_atomic(summary_path(output), summary)
    as_location(summary_path(output)).with_suffix(".md").write_text(summary_markdown(summary))
    work.rm(recursive=True)
    return summary


def _method_options(fdef: Any, method_params: dict[str, str] | None, fraction: float | None, seed: int,
                    num_clusters: int | None) -> dict[str, str]:
    """``--param NAME=VALUE`` plus the run's seed, k and (for a method taking it) the target fraction."""
    options = {"seed": str(seed), **({"num_clusters": str(num_clusters)} if num_clusters else {})}
    options.update({str(k): str(v) for k, v in (method_params or {}).items()})
    from datacomp.filters.methods import check_params

    check_params(options)
    if fdef is not None and fdef.fraction_option:
        if fraction is None and fdef.fraction_option not in options:
            raise DataCompError(f"{fdef.name}: give --fraction (the share of the pool to keep)")
        if fraction is not None:
            options[fdef.fraction_option] = repr(float(fraction))
    return options


def prepare_global(groups: list[str], metadata_dir: Location, files: list[Any], cfg: SignalConfig,
                   executor: str | Executor | None, workers: int | None) -> None:
    """Run the global pass of each wanted global signal (semdedup, density) whose cache is incomplete."""
    for g in groups:
        sig = get_signal(g)
        if sig.prepare is not None and missing_groups_any(files, g, cfg):
            sig.prepare(metadata_dir, files, cfg, resolve_executor(executor, workers, ThreadExecutor))


def missing_groups_any(files: list[Any], group: str, cfg: SignalConfig) -> bool:
    return any(signal_state(f, group, cfg) != "full" for f in files)


def filter_task(parquet: str, work: str, name: str | None, where: str | None, params: FilterParams,
                cfg: SignalConfig, plugins: list[str]) -> dict[str, Any]:
    """Engine task: apply the rules to one metadata file and write its kept uids.

    Missing cached signals are computed here. A filter's late rules (language ID) are evaluated
    after the others and the ``where`` expression, on the rows those keep, so language ID runs
    only for them; their ``failing`` count is among those rows.
    """
    load_plugins(plugins)
    f = as_location(parquet)
    fdef = get_filter(name) if name else None
    cols = list(columns_needed(fdef, params)) if fdef else []
    wcols = where_columns(where) if where else []
    late = dict(fdef.late_rules) if fdef else {}
    late_cols = list(dict.fromkeys(c for cs in late.values() for c in cs if c in cols and c not in wcols))
    if not late_cols:
        late = {}
    eager = [c for c in dict.fromkeys([*cols, *wcols]) if c not in late_cols and c not in ("uid_f0", "uid_f1")]
    if groups := groups_for(eager):
        ensure_signals(f, groups, cfg)  # (one read of the metadata for all the groups still missing)
    table = load_columns(f, ["uid_f0", "uid_f1", *eager], cfg)
    n = table.num_rows
    rules: dict[str, np.ndarray] = {}
    if fdef:
        rules = apply(fdef, _with_nulls(table, late_cols) if late else table, params)
        rules = {k: m for k, m in rules.items() if k not in late}
    if where:
        rules[WHERE] = where_mask(table, where, f)
    if late:
        pre = np.logical_and.reduce(list(rules.values())) if rules else np.ones(n, bool)
        lazy = load_columns(f, late_cols, cfg, rows=pre)
        for c in late_cols:
            table = table.append_column(c, lazy.column(c))
        second = apply(fdef, table, params)  # type: ignore[arg-type]
        for k in late:
            rules[k] = second[k] | ~pre  # decided only where the other rules keep the row
    keep = np.ones(n, bool)
    removed, failing = {}, {}
    for rule, m in rules.items():
        removed[rule] = int(np.count_nonzero(keep & ~m))
        failing[rule] = int(np.count_nonzero(~m))
        keep &= m
    k = int(np.count_nonzero(keep))
    uids = np.empty(k, UID_DTYPE)
    f0, f1 = table["uid_f0"].to_numpy(), table["uid_f1"].to_numpy()
    uids["f0"], uids["f1"] = (f0, f1) if k == n else (f0[keep], f1[keep])
    uids = sort_uids(uids)  # (sorted here, in parallel; the driver only merges)
    with (as_location(work) / "kept" / f"{f.stem}.npy").atomic_open("wb") as fh:
        np.save(fh, uids, allow_pickle=False)
    return {"rows": n, "kept": k, "removed": removed, "failing": failing}


def _with_nulls(table: Any, columns: list[str]) -> Any:
    """``table`` plus all-null stand-ins for ``columns`` (a filter's first, late-rules-blind call)."""
    import pyarrow as pa

    for c in columns:
        table = table.append_column(c, pa.nulls(table.num_rows, column_type(c)))
    return table


def where_mask(table: Any, where: str, source: Path | Location) -> np.ndarray:
    """Rows where the SQL expression (run by DuckDB over the signal columns) is true.

    NaN in a float column becomes NULL first: DuckDB orders NaN above every number (``NaN > 0.3``
    is true), while the named rules treat NaN as failing every comparison, as NULL does in SQL.
    """
    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            col = table.column(i)
            table = table.set_column(i, field.name, pc.if_else(pc.is_nan(col), pa.scalar(None, field.type), col))
    t = table.append_column("__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    con = duckdb.connect()
    try:
        con.execute("SET threads=1")
        con.register("signals", t)
        try:
            rows = con.execute(f"SELECT __row FROM signals WHERE {where}").fetchnumpy()["__row"]
        except duckdb.Error as e:
            msg = str(e).splitlines()[0]
            raise DataCompError(f"--where {where!r} failed on {source.name}: {msg}") from None
    finally:
        con.close()
    mask = np.zeros(table.num_rows, bool)
    mask[np.asarray(rows, np.int64)] = True
    return mask


def resolve_shards_dir(shards_dir: str | os.PathLike[str] | None, metadata_dir: Path | Location,
                       signals: list[str]) -> Path:
    """The pool's (local) shards folder for signals reading pixels: given, else ``<metadata-dir>/../shards``."""
    if shards_dir:
        d = Path(shards_dir)
        if not d.is_dir():
            raise DataCompError(f"{d}: --shards-dir not found (the pool's local folder of .tar shards)")
        return d
    local = as_location(metadata_dir).local_path
    d = local.resolve().parent / "shards" if local is not None else None
    if d is not None and d.is_dir():
        return d
    raise DataCompError(f"signal(s) {', '.join(signals)} read image pixels: pass the pool's shards with --shards-dir"
                        + (f" (no {d})" if d is not None else ""))


def _resolve_synsets(synsets: str | os.PathLike[str] | None, assets: Path | None) -> Path:
    if synsets:
        return Path(synsets)
    if assets is not None and (assets / "concepts.txt").is_file():
        return assets / "concepts.txt"
    from datacomp.filters.wordnet import imagenet21k_synsets_file

    return imagenet21k_synsets_file()


def _resolve_targets(targets: str | os.PathLike[str] | None, assets: Path | None) -> Path:
    if targets:
        return Path(targets)
    if assets is not None:
        return assets / "imagenet_analog_l14_img.npy"
    raise DataCompError(
        "image-based filters need the reference images' l14 embeddings: pass --targets FILE "
        "(ImageNet-1k train embeddings: a .npy/.npz file, or the directory holding the five official "
        "in1k_clip_vit_l14_{0..4}.pt)"
    )


def _resolve_centroids(centroids: str | os.PathLike[str] | None, scale: str | None, metadata_dir: Location,
                       sdir: Location, compat: bool, num_clusters: int | None, seed: int,
                       workers: int | None, executor: str | Executor | None = None) -> Path | Location:
    if centroids:
        return as_location(centroids)
    if scale:
        p = Path.home() / ".cache" / "datacomp" / f"{scale}_centroids_l14.pt"
        if not p.is_file():
            raise DataCompError(
                f"{p}: centroids for --image-based-scale {scale} not found; put the official "
                f"{scale}_centroids_l14.pt there, pass --centroids FILE, or build them with "
                "`datacomp filter build-centroids`"
            )
        return p
    from datacomp.filters.clusters import build_centroids

    kind = "l2" if compat else "spherical"
    pool = hashlib.sha256(str(metadata_dir.resolve()).encode()).hexdigest()[:8]
    path = sdir / f"centroids-auto-{pool}-{kind}-k{num_clusters or 'auto'}-s{seed}.npy"
    if not path.isfile():
        log.info("no --centroids given: building them from the pool's l14 embeddings into %s", path)
        build_centroids(metadata_dir, path, num_clusters=num_clusters, seed=seed, compat=compat,
                        signals_dir=sdir, workers=workers, executor=executor)
    return path


def summary_markdown(s: dict[str, Any]) -> str:
    """The summary as a small markdown table (pool, kept, what each rule removed)."""
    lines = [f"# Filter `{s['name']}` ({s['mode']} mode)", "",
             "| | rows | share of pool |", "|---|---:|---:|",
             f"| pool | {s['pool_size']:,} | 100% |"]
    pool = max(1, s["pool_size"])
    for rule, n in s["removed"].items():
        lines.append(f"| removed by `{rule}` | {n:,} | {100 * n / pool:.2f}% |")
    lines.append(f"| **kept** | **{s['kept']:,}** | **{100 * s['fraction']:.2f}%** |")
    if s.get("threshold") is not None:
        lines += ["", f"Score threshold: {s['threshold']:.6g}"]
    if d := s.get("duplicate_uids"):
        lines += ["", f"Duplicate uids in the metadata: {d['count']:,} extra row(s) (e.g. `{d['example']}` in "
                  f"{d['files'][0]} and {d['files'][1]}); the subset lists each uid once."]
    return "\n".join(lines) + "\n"



def compute_signals(
    metadata_dir: str | os.PathLike[str],
    signals_dir: str | os.PathLike[str],
    groups: list[str] | tuple[str, ...] | None = None,
    synsets: str | os.PathLike[str] | None = None,
    centroids: str | os.PathLike[str] | None = None,
    compat: bool = False,
    num_clusters: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    executor: str | Executor | None = None,
    progress: bool = True,
    plugins: list[str] | tuple[str, ...] = (),
    shards_dir: str | os.PathLike[str] | None = None,
    signal_assets: dict[str, str] | None = None,
    method_params: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Fill the signals cache for every metadata file (so later ``--where`` runs only read it).

    ``groups``: the signals to compute (default: every registered one that needs no image pixels);
    signals already cached are kept.
    """
    from datacomp.filters.registry import list_signals

    load_plugins(list(plugins))
    names = [s.name for s in list_signals()]
    groups = [s.name for s in list_signals() if not s.images and not s.on_demand] if groups is None else list(groups)
    metadata_dir = as_location(metadata_dir)
    sdir = as_location(signals_dir)
    unknown = [g for g in groups if g not in names]
    if unknown:
        raise DataCompError(f"unknown signal(s) {unknown}; choose from {', '.join(names)}")
    files = md.list_parquets(metadata_dir)
    assets = world_assets(metadata_dir)
    needs = {a for g in groups for a in get_signal(g).assets}
    syn = _resolve_synsets(synsets, assets) if "synsets" in needs else None
    cen = (_resolve_centroids(centroids, None, metadata_dir, sdir, compat, num_clusters, seed, workers, executor)
           if "centroids" in needs else None)
    pixels = [g for g in groups if get_signal(g).images]
    extra = dict(signal_assets or {})
    if "targets" in needs and "targets" not in extra:
        extra["targets"] = str(_resolve_targets(None, assets))
    cfg = SignalConfig(str(sdir), str(syn) if syn else None, str(cen) if cen else None,
                       extra=extra, options=_method_options(None, method_params, None, seed, num_clusters),
                       shards_dir=str(resolve_shards_dir(shards_dir, metadata_dir, pixels)) if pixels else None)
    prepare_global(list(groups), metadata_dir, files, cfg, executor, workers)
    rows = [md.num_rows(f) for f in files]
    tasks = [Task(f.stem, signals_task, (str(f), list(groups), cfg, list(plugins)), weight=n)
             for f, n in zip(files, rows) if missing_groups(f, list(groups), cfg)]
    exe = resolve_executor(executor, workers, lambda w: ParentAndPoolExecutor(w or os.cpu_count() or 1))
    results = run_tasks(tasks, exe,
                        desc="signals", unit="row", progress=progress)
    return {"files": len(files), "rows": int(sum(rows)), "computed_files": len(results), "groups": list(groups),
            "signals_dir": str(sdir), "synsets": cfg.synsets_file, "centroids": cfg.centroids_file}
