"""Zero-shot classification (``acc1``, ``acc5``, ``mean_per_class_recall``) and worst-group fairness tasks.

``zeroshot_classification``: CLIP_benchmark's zero-shot routine. ``fairness``: the same pass plus
accuracy per value of the task's ``group_field`` and the worst group (Dollar Street with
``"top_k": 5`` in its suite entry: ``acc_top5_*``; GeoDE and the embedded worst-group task: ``acc_*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.evaluate import metrics as M
from datacomp.evaluate.data import Sample, read_image, read_label, read_metadata
from datacomp.evaluate.families import Family, TaskRun, register_family
from datacomp.evaluate.registry import EvalTask


def load_labelled(key: str, members: dict[str, bytes], task: EvalTask, preprocess: Any, where: Path) -> Sample:
    """Image + integer ``cls`` (+ the ``npy`` metadata vector when the task names metadata fields)."""
    s = Sample(read_image(members, preprocess, task, where, key), label=read_label(members, task, where, key))
    if task.metadata_fields:
        s.meta = read_metadata(members, task, where, key)
    return s


@dataclass
class Predictions:
    top: np.ndarray  # (N, min(5, C)) class indices by decreasing logit
    argmax: np.ndarray  # (N,) first maximal class
    labels: np.ndarray  # (N,)
    meta: np.ndarray | None  # (N, fields) or None
    num_classes: int


def zeroshot_predictions(run: TaskRun) -> Predictions:
    """One pass over the task: logits ``100 * normalize(image) @ W`` per batch, kept as top-5 and argmax."""
    W = run.classifier()
    C = int(W.shape[1])
    tops, argmaxes, labels, metas = [], [], [], []
    for batch in run.batches():
        logits = (100.0 * run.encode_images([s.image for s in batch]) @ W).cpu()
        tops.append(M.topk_predictions(logits, 5))
        argmaxes.append(logits.argmax(dim=1).numpy())
        labels.append(np.array([s.label for s in batch], dtype=np.int64))
        if run.task.metadata_fields:
            metas.append(np.stack([s.meta for s in batch]))
    if not labels:
        raise run.fail("holds no samples with an image and a cls label")
    y = np.concatenate(labels)
    if y.max() >= C or y.min() < 0:
        raise run.fail(f"labels range {y.min()}..{y.max()} but {C} class names")
    return Predictions(np.concatenate(tops), np.concatenate(argmaxes), y,
                       np.concatenate(metas) if metas else None, C)


def classification_metrics(p: Predictions) -> dict[str, Any]:
    out: dict[str, Any] = M.classification_metrics(p.top, p.argmax, p.labels, p.num_classes)
    out["n_samples"] = len(p.labels)
    return out


def run_zeroshot(run: TaskRun) -> dict[str, Any]:
    return classification_metrics(zeroshot_predictions(run))


def run_fairness(run: TaskRun) -> dict[str, Any]:
    task = run.task
    if not task.group_field:
        raise run.fail("a fairness task needs group_field (and metadata_fields) in its suite entry")
    p = zeroshot_predictions(run)
    out = classification_metrics(p)
    k = int(task.extra.get("top_k", 1))
    assert p.meta is not None
    out.update(M.topk_group_metrics(p.top, p.labels, p.meta, task.metadata_fields, task.group_field, k))
    return out


register_family(Family("zeroshot_classification", run_zeroshot, load_labelled,
                       description="zero-shot classification: acc1, acc5, mean_per_class_recall"))
register_family(Family("fairness", run_fairness, load_labelled,
                       description="classification + accuracy per group_field value and the worst group "
                                   "(Dollar Street top_k 5, GeoDE)"))
