"""Run a suite: load the model once, encode each task in one pass, write ``eval_results.jsonl`` as we go.

Per task the image tower runs once over the task's tars; the text side (zero-shot classifiers) is
cached in memory per (model fingerprint, class names, templates), and optionally on disk, so
re-evaluating the same model, or tasks sharing class names (ImageNet and its shifts), costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data as tud

from datacomp.errors import DataCompError
from datacomp.evaluate import metrics as M
from datacomp.evaluate.data import DEFAULT_DATA_DIR, Sample, TaskData, fetch, iter_samples, locate
from datacomp.evaluate.model import ModelSpec, resolve_model
from datacomp.evaluate.registry import EvalTask, select_tasks, suite_tasks_file
from datacomp.evaluate.results import ResultsFile, sanitize
from datacomp.io import atomic_path, write_record

log = logging.getLogger(__name__)

RESULTS_NAME = "eval_results.jsonl"
RECORD_NAME = "eval_record.json"

_CLASSIFIER_CACHE: dict[str, Any] = {}


def default_batch_size(device: str) -> int:
    """The original's 64 under-fills a GPU and, on a CPU, pays per-call thread overhead 4x more often."""
    return 256


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------------------------
# batching


class _SampleStream(tud.IterableDataset):
    """An IterableDataset over a task's shards, split by DataLoader worker (order is irrelevant to metrics)."""

    def __init__(self, data: TaskData, preprocess: Any):
        self.data = data
        self.preprocess = preprocess

    def __iter__(self) -> Iterator[Sample]:
        info = tud.get_worker_info()
        shards = self.data.shards if info is None else self.data.shards[info.id::info.num_workers]
        return iter_samples(self.data, self.preprocess, shards)


def _batches(data: TaskData, preprocess: Any, batch_size: int, workers: int) -> Iterator[list[Sample]]:
    if workers <= 0 or len(data.shards) == 1:
        batch: list[Sample] = []
        for s in iter_samples(data, preprocess):
            batch.append(s)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    yield from tud.DataLoader(_SampleStream(data, preprocess), batch_size=batch_size,
                              num_workers=min(workers, len(data.shards)), collate_fn=list)


# ----------------------------------------------------------------------------------------------
# encoders


def _autocast(device: str) -> Any:
    import contextlib

    return torch.autocast("cuda") if device.startswith("cuda") else contextlib.nullcontext()


def encode_texts(loaded: Any, texts: list[str], normalize: bool = True, amp: bool = True,
                 chunk: int = 512) -> Any:
    """Text embeddings (float32, rows L2-normalised unless told otherwise), encoded in bounded chunks."""
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for s in range(0, len(texts), chunk):
            tok = loaded.tokenizer(texts[s:s + chunk]).to(loaded.device)
            ctx = _autocast(loaded.device) if amp else _null()
            with ctx:
                e = loaded.model.encode_text(tok)
            e = e.float()
            out.append(F.normalize(e, dim=-1) if normalize else e)
    return torch.cat(out) if out else torch.zeros(0)


def _null() -> Any:
    import contextlib

    return contextlib.nullcontext()


def encode_images(loaded: Any, images: list[Any], normalize: bool = True, amp: bool = False) -> Any:
    import torch.nn.functional as F

    x = torch.stack(images).to(loaded.device)
    with torch.inference_mode(), (_autocast(loaded.device) if amp else _null()):
        f = loaded.model.encode_image(x)
    f = f.float()
    return F.normalize(f, dim=-1) if normalize else f


def zero_shot_classifier(loaded: Any, classnames: list[str], templates: list[str], fingerprint: str,
                         cache_dir: Path | None = None) -> Any:
    """``(d, C)`` class weights: per class, normalised template embeddings averaged and re-normalised.

    Cached in memory and (with ``cache_dir``) on disk under a hash of the model fingerprint, class
    names and templates.
    """
    h = hashlib.sha256("\x1e".join([fingerprint, "\x1f".join(classnames), "\x1f".join(templates)]).encode())
    key = h.hexdigest()[:32]
    disk = cache_dir / f"classifier-{key}.npy" if cache_dir else None
    w = _CLASSIFIER_CACHE.get(key)
    if w is None and disk is not None and disk.is_file():
        w = torch.from_numpy(np.load(disk))
    if w is None:
        texts = [t.format(c=c) for c in classnames for t in templates]
        emb = encode_texts(loaded, texts).reshape(len(classnames), len(templates), -1)
        w = emb.mean(dim=1)
        w = (w / w.norm(dim=-1, keepdim=True)).T.contiguous().cpu()
    if disk is not None and not disk.is_file():
        with atomic_path(disk) as tmp, open(tmp, "wb") as f:
            np.save(f, w.numpy())
    _CLASSIFIER_CACHE[key] = w
    return w.to(loaded.device)


# ----------------------------------------------------------------------------------------------
# families


def _progress(task: EvalTask, batch_size: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    total = math.ceil(task.size / batch_size) if task.size else None
    return tqdm(total=total, desc=task.name, unit="batch", disable=not enabled, leave=False)


def run_classification(loaded: Any, data: TaskData, fingerprint: str, batch_size: int, workers: int,
                       cache_dir: Path | None, progress: bool) -> dict[str, Any]:
    task = data.task
    assert data.classnames is not None and data.templates is not None
    W = zero_shot_classifier(loaded, data.classnames, data.templates, fingerprint, cache_dir)
    C = W.shape[1]
    tops, argmaxes, labels, metas = [], [], [], []
    bar = _progress(task, batch_size, progress)
    for batch in _batches(data, loaded.preprocess_val, batch_size, workers):
        logits = (100.0 * encode_images(loaded, [s.image for s in batch]) @ W).cpu()
        tops.append(M.topk_predictions(logits, 5))
        argmaxes.append(logits.argmax(dim=1).numpy())
        labels.append(np.array([s.label for s in batch], dtype=np.int64))
        if task.metadata_fields:
            metas.append(np.stack([s.meta for s in batch]))
        bar.update(1)
    bar.close()
    if not labels:
        raise DataCompError(f"task {task.key}: {data.root} holds no samples with an image and a cls label")
    top, amax, y = np.concatenate(tops), np.concatenate(argmaxes), np.concatenate(labels)
    if y.max() >= C or y.min() < 0:
        raise DataCompError(f"task {task.key}: labels range {y.min()}..{y.max()} but {C} class names")
    out: dict[str, Any] = M.classification_metrics(top, amax, y, C)
    out["n_samples"] = len(y)
    if task.metadata_fields:
        meta = np.concatenate(metas)
        fields = task.metadata_fields
        if meta.shape[1] != len(fields):
            raise DataCompError(f"task {task.key}: npy metadata has {meta.shape[1]} values, "
                                f"registry names {len(fields)} ({', '.join(fields)})")
        tail = task.key.rsplit("/", 1)[-1]
        if task.family == "wilds" and tail == "iwildcam":
            out.update(M.iwildcam_metrics(amax, y))
        elif task.family == "wilds" and tail == "camelyon17":
            out.update(M.camelyon17_metrics(amax, y, meta, fields))
        elif task.family == "wilds" and tail == "fmow":
            out.update(M.fmow_metrics(amax, y, meta, fields))
        elif task.group_field:
            k = 5 if (task.main_metric or "").startswith("acc_top5") else 1
            out.update(M.topk_group_metrics(top, y, meta, fields, task.group_field, k))
    return out


def run_fairface(loaded: Any, data: TaskData, fingerprint: str, batch_size: int, workers: int,
                 cache_dir: Path | None, progress: bool) -> dict[str, Any]:
    """FairFace/UTKFace: ``objective:``-prefixed class names and templates split into four classifiers."""
    task = data.task
    by_obj: dict[str, dict[str, list[str]]] = {o: {"classnames": [], "templates": []} for o in M.FAIRFACE_OBJECTIVES}
    for kind, lines in (("templates", data.templates or []), ("classnames", data.classnames or [])):
        for line in lines:
            obj, _, rest = line.partition(":")
            if obj not in by_obj:
                raise DataCompError(f"task {task.key}: {kind} line {line!r} lacks a race:/gender:/age:/toxic: prefix")
            by_obj[obj][kind].append(rest)
    Ws = [zero_shot_classifier(loaded, by_obj[o]["classnames"], by_obj[o]["templates"], fingerprint, cache_dir)
          for o in M.FAIRFACE_OBJECTIVES]
    preds, metas = [], []
    bar = _progress(task, batch_size, progress)
    for batch in _batches(data, loaded.preprocess_val, batch_size, workers):
        f = encode_images(loaded, [s.image for s in batch])
        preds.append(np.stack([(100.0 * f @ W).argmax(dim=1).cpu().numpy() for W in Ws], axis=1))
        metas.append(np.stack([s.meta for s in batch]))
        bar.update(1)
    bar.close()
    if not preds:
        raise DataCompError(f"task {task.key}: {data.root} holds no samples")
    return M.fairface_metrics(np.concatenate(preds), np.concatenate(metas), task.metadata_fields)


def run_retrieval(loaded: Any, data: TaskData, batch_size: int, workers: int, progress: bool) -> dict[str, Any]:
    imgs, txts, owner = [], [], []
    n_img = 0
    amp = loaded.device.startswith("cuda")
    bar = _progress(data.task, batch_size, progress)
    for batch in _batches(data, loaded.preprocess_val, batch_size, workers):
        imgs.append(encode_images(loaded, [s.image for s in batch], amp=amp).cpu())
        caps = [c for s in batch for c in (s.captions or [])]
        owner.extend(n_img + i for i, s in enumerate(batch) for _ in (s.captions or []))
        txts.append(encode_texts(loaded, caps, amp=amp).cpu())
        n_img += len(batch)
        bar.update(1)
    bar.close()
    if not imgs or not owner:
        raise DataCompError(f"task {data.task.key}: {data.root} holds no image-caption samples")
    return M.retrieval_metrics(torch.cat(imgs), torch.cat(txts), np.asarray(owner))


def _wino_prompt(cue: str) -> str:
    cue = cue.lower()
    return f"An {cue}" if cue[:1] in ("a", "e", "i", "o", "u") else f"A {cue}"


def run_winogavil(loaded: Any, data: TaskData, batch_size: int, progress: bool) -> dict[str, Any]:
    """Unnormalised text . image similarity per example (as the original), many examples per forward pass."""
    scores, groups = [], []
    amp = loaded.device.startswith("cuda")
    pending: list[Sample] = []
    bar = _progress(data.task, 1, progress)

    def flush() -> None:
        feats = encode_images(loaded, [im for s in pending for im in s.image], normalize=False, amp=amp).cpu()
        prompts = encode_texts(loaded, [_wino_prompt(s.wino["cue"]) for s in pending], normalize=False,
                               amp=amp).cpu()
        off = 0
        for i, s in enumerate(pending):
            n = len(s.image)
            sim = (prompts[i:i + 1] @ feats[off:off + n].T).squeeze(0).numpy()
            y_true = np.isin(s.wino["candidates"], s.wino["associations"])
            scores.append(M.winogavil_example_score(sim, y_true))
            groups.append(n)
            off += n
        bar.update(len(pending))
        pending.clear()

    for s in iter_samples(data, loaded.preprocess_val):
        if len(s.image) != len(s.wino["candidates"]):
            raise DataCompError(f"task {data.task.key}: an example has {len(s.image)} images for "
                                f"{len(s.wino['candidates'])} candidates")
        pending.append(s)
        if sum(len(p.image) for p in pending) >= batch_size:
            flush()
    if pending:
        flush()
    bar.close()
    if not scores:
        raise DataCompError(f"task {data.task.key}: {data.root} holds no examples")
    return M.winogavil_metrics(np.array(scores), np.array(groups))


def evaluate_task(loaded: Any, data: TaskData, fingerprint: str, batch_size: int, workers: int = 0,
                  cache_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """All metrics of one task (before ``main_metric`` is added)."""
    fam = data.task.family
    if fam == "retrieval":
        return run_retrieval(loaded, data, batch_size, workers, progress)
    if fam == "winogavil":
        return run_winogavil(loaded, data, batch_size, progress)
    if fam == "fairface":
        return run_fairface(loaded, data, fingerprint, batch_size, workers, cache_dir, progress)
    return run_classification(loaded, data, fingerprint, batch_size, workers, cache_dir, progress)


def result_line(task: EvalTask, metrics: dict[str, Any]) -> dict[str, Any]:
    """One ``eval_results.jsonl`` object as the original writes it (``main_metric`` inside ``metrics``)."""
    m = sanitize(metrics)
    m["main_metric"] = m.get(task.main_metric) if task.main_metric else None
    return {"key": task.key, "dataset": task.name, "metrics": m}


# ----------------------------------------------------------------------------------------------
# the run


def evaluate(
    output_dir: str | os.PathLike[str],
    model: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    train_output_dir: str | os.PathLike[str] | None = None,
    suite: str = "embedded",
    tasks: list[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    download: bool = False,
    batch_size: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    tasks_file: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate one model on a suite; returns the result lines of the selected tasks (old and new).

    Finished tasks found in ``<output_dir>/eval_results.jsonl`` are skipped unless ``force``; every
    task's data is checked before the model is loaded, so a missing set fails fast with the fix.
    """
    from datacomp.models import load_model

    started = time.time()
    spec = resolve_model(model, checkpoint, train_output_dir)
    tasks_file = suite_tasks_file(suite, data_dir, tasks_file)
    selected = select_tasks(suite, tasks, tasks_file)
    if data_dir is None:
        if suite == "embedded":
            raise DataCompError("the embedded suite needs --data-dir: the eval/ folder of an embedded world "
                                "(written by `datacomp synth`)")
        data_dir = DEFAULT_DATA_DIR
    data_dir = Path(data_dir)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = ResultsFile(out / RESULTS_NAME)
    stale = _other_model_lines(out, spec, results, force)
    todo = [t for t in selected if force or t.key not in results.lines or t.key in stale]
    datas = []
    for t in todo:
        try:
            datas.append(locate(t, data_dir))
        except DataCompError:
            if not download or suite != "datacomp":
                raise
            log.info("downloading %s from %s", t.key, t.source)
            fetch(t, data_dir)
            datas.append(locate(t, data_dir))
    if stale or (force and todo):
        results.drop(stale + [t.key for t in todo])
    _write_record(out, spec, suite, data_dir, selected, 0, len(selected) - len(todo), started)
    if spec.info_pkl is not None and (stale or not (out / "info.pkl").exists()) \
            and spec.info_pkl.resolve() != (out / "info.pkl").resolve():
        shutil.copyfile(spec.info_pkl, out / "info.pkl")
    skipped = len(selected) - len(todo)
    if skipped:
        log.info("%d of %d tasks already in %s (pass --force to re-run them)", skipped, len(selected), results.path)
    if todo:
        device = device or default_device()
        bs = batch_size or default_batch_size(device)
        nw = workers if workers is not None else (min(8, os.cpu_count() or 1) if device.startswith("cuda") else 0)
        torch.manual_seed(0)
        loaded = load_model(spec.name, spec.checkpoint, device=device)
        cdir = Path(cache_dir) if cache_dir else None
        for i, data in enumerate(datas, 1):
            t0 = time.time()
            m = evaluate_task(loaded, data, spec.fingerprint, bs, nw, cdir, progress)
            line = result_line(data.task, m)
            results.append(line)
            log.info("[%d/%d] %s: %s = %s (%.1fs)", i, len(datas), data.task.name, data.task.main_metric,
                     _fmt(line["metrics"]["main_metric"]), time.time() - t0)
    _write_record(out, spec, suite, data_dir, selected, len(todo), skipped, started)
    return [results.lines[t.key] for t in selected if t.key in results.lines]


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _other_model_lines(out: Path, spec: ModelSpec, results: ResultsFile, force: bool) -> list[str]:
    """Keys of lines written for a different model: refused, or (``force``) all to be replaced."""
    rec = out / RECORD_NAME
    if not results.lines or not rec.is_file():
        return []
    try:
        prev = json.loads(rec.read_text()).get("config", {}).get("fingerprint")
    except json.JSONDecodeError:
        return []
    if not prev or prev == spec.fingerprint:
        return []
    if not force:
        raise DataCompError(
            f"{results.path}: holds results of another model ({prev.split('|')[0]}, different checkpoint); "
            "use a new --output-dir or pass --force to replace them"
        )
    log.warning("%s: replacing %d result lines of another model", results.path, len(results.lines))
    return list(results.lines)


def _write_record(out: Path, spec: ModelSpec, suite: str, data_dir: Path, selected: list[EvalTask], ran: int,
                  skipped: int, started: float) -> None:
    write_record(
        out / RECORD_NAME, "evaluate",
        config={"model": spec.name, "checkpoint": str(spec.checkpoint) if spec.checkpoint else None,
                "fingerprint": spec.fingerprint, "scale": spec.scale, "suite": suite, "data_dir": str(data_dir),
                "tasks": [t.key for t in selected]},
        counts={"tasks": len(selected), "ran": ran, "skipped": skipped},
        started=started,
    )


def resolve_suite(suite: str, spec: ModelSpec) -> str:
    """``auto``: the embedded suite for the tiny scale / our packaged model configs, DataComp's otherwise."""
    if suite != "auto":
        return suite
    from datacomp.models import MODEL_CONFIG_DIR

    ours = {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")}
    return "embedded" if spec.scale == "tiny" or spec.name in ours else "datacomp"
