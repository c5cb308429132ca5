"""Metric families with the original's numerics, as pure functions of predictions, labels and metadata.

Everything here works on numpy arrays (plus ``torch.topk`` where the original's tie-breaking is
torch's), so each family can be checked directly against an independent computation:

- zero-shot classification as clip_benchmark 1.4.0 (``acc1``, ``acc5`` only with >= 5 classes,
  ``mean_per_class_recall`` = balanced accuracy);
- retrieval recall@k as CLIP_benchmark (a caption counts if its image is in its top-k; an image if
  any of its captions is in its top-k);
- WILDS-style group metrics (``standard_group_eval`` of wilds 2.0 with DataComp's evaluators),
  implemented with ``np.bincount`` instead of the wilds package;
- Dollar Street / GeoDE worst-group accuracy, FairFace / UTKFace tables, WinoGAViL Jaccard.

Empty groups give ``None`` (the original wrote ``NaN``, which is not JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Metrics = dict[str, Any]


def _f(x: float) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else x


# ----------------------------------------------------------------------------------------------
# zero-shot classification


def topk_predictions(logits: Any, k: int) -> np.ndarray:
    """``(N, k)`` class indices by decreasing logit, with torch.topk's ordering (as clip_benchmark)."""
    import torch

    t = torch.as_tensor(logits)
    return t.topk(min(k, t.shape[1]), dim=1, largest=True, sorted=True)[1].numpy()


def classification_metrics(topk: np.ndarray, argmax: np.ndarray, target: np.ndarray, num_classes: int) -> Metrics:
    """``acc1``, ``acc5`` (None with fewer than 5 classes) and ``mean_per_class_recall``.

    ``topk`` are the top-5 (or fewer) predictions, ``argmax`` the first maximal class (torch.argmax),
    which is what the original feeds to balanced accuracy.
    """
    target = np.asarray(target, dtype=np.int64)
    n = len(target)
    if n == 0:
        return {"acc1": None, "acc5": None, "mean_per_class_recall": None}
    hits = topk == target[:, None]
    acc1 = float(hits[:, 0].sum()) / n
    acc5 = float(hits[:, :5].any(axis=1).sum()) / n if num_classes >= 5 else None
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": balanced_accuracy(target, argmax)}


def balanced_accuracy(target: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``target`` (sklearn's ``balanced_accuracy_score``)."""
    target = np.asarray(target, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    size = int(max(target.max(initial=0), pred.max(initial=0))) + 1
    total = np.bincount(target, minlength=size)
    correct = np.bincount(target[pred == target], minlength=size)
    present = total > 0
    return float(np.mean(correct[present] / total[present]))


def macro_recall_f1(target: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Macro recall and F1 over the labels present in ``target`` (wilds' ``Recall``/``F1``, average=macro)."""
    target = np.asarray(target, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    size = int(max(target.max(initial=0), pred.max(initial=0))) + 1
    support = np.bincount(target, minlength=size)
    predicted = np.bincount(pred, minlength=size)
    tp = np.bincount(target[pred == target], minlength=size)
    labels = support > 0
    recall = tp[labels] / support[labels]
    f1 = 2.0 * tp[labels] / (support[labels] + predicted[labels])
    return float(recall.mean()), float(f1.mean())


# ----------------------------------------------------------------------------------------------
# WILDS-style grouping


def group_ids(metadata: np.ndarray, field_idx: Sequence[int]) -> tuple[np.ndarray, list[int]]:
    """Combinatorial group index per row and each field's cardinality (max value + 1), as wilds does."""
    meta = np.asarray(metadata, dtype=np.int64)[:, list(field_idx)]
    card = [int(meta[:, j].max(initial=-1)) + 1 for j in range(meta.shape[1])]
    factors = np.concatenate([[1], np.cumprod(card)[:-1]]).astype(np.int64)
    return meta @ factors, card


def group_field_str(fields: Sequence[str], card: Sequence[int], group: int) -> str:
    """wilds' ``CombinatorialGrouper.group_field_str``: fields in reverse order, ``name:value`` joined by ``_``."""
    values = []
    for c in card:
        values.append(group % c if c else 0)
        group = group // c if c else 0
    return "_".join(f"{fields[i]}:{values[i]}" for i in reversed(range(len(fields))))


def group_accuracy(
    name: str, correct: np.ndarray, metadata: np.ndarray, fields: Sequence[str], groupby: Sequence[str],
    worst_name: str | None = None,
) -> Metrics:
    """wilds ``standard_group_eval`` for an element-wise accuracy ``correct`` (0/1 per sample).

    Gives ``<name>_avg``, ``<name>_<group>`` and ``count_<group>`` for every group index (empty ones
    included, with a None value), and ``<name>_wg``: the minimum over non-empty groups.
    """
    correct = np.asarray(correct, dtype=np.float64)
    g, card = group_ids(metadata, [list(fields).index(f) for f in groupby])
    n_groups = int(np.prod(card)) if card else 0
    counts = np.bincount(g, minlength=n_groups)
    sums = np.bincount(g, weights=correct, minlength=n_groups)
    out: Metrics = {f"{name}_avg": _f(correct.mean()) if len(correct) else None}
    for i in range(n_groups):
        gs = group_field_str(groupby, card, i)
        out[f"{name}_{gs}"] = _f(sums[i] / counts[i]) if counts[i] else None
        out[f"count_{gs}"] = int(counts[i])
    nonempty = counts > 0
    out[worst_name or f"{name}_wg"] = _f((sums[nonempty] / counts[nonempty]).min()) if nonempty.any() else None
    return out


def iwildcam_metrics(pred: np.ndarray, target: np.ndarray) -> Metrics:
    recall, f1 = macro_recall_f1(target, pred)
    return {"acc_avg": float(np.mean(pred == target)), "recall-macro_all": recall, "F1-macro_all": f1}


def worst_group_metrics(pred: np.ndarray, target: np.ndarray, metadata: np.ndarray, fields: Sequence[str],
                        group_field: str) -> Metrics:
    """Camelyon17's evaluator: accuracy per ``group_field`` value (there: ``slide``) and the worst, ``acc_wg``."""
    return group_accuracy("acc", pred == target, metadata, fields, [group_field])


def fmow_metrics(pred: np.ndarray, target: np.ndarray, metadata: np.ndarray, fields: Sequence[str]) -> Metrics:
    """Accuracy by year (worst renamed ``acc_worst_year``) and by region (``acc_worst_region``).

    The original skips regions whose label contains "Other", but its labels are numeric, so the
    test never fires; the worst region is over all non-empty regions, as on the leaderboard.
    """
    correct = pred == target
    out = group_accuracy("acc", correct, metadata, fields, ["year"], worst_name="acc_worst_year")
    region = group_accuracy("acc", correct, metadata, fields, ["region"], worst_name="acc_worst_region")
    region.pop("acc_avg")
    out.update(region)
    return out


def topk_group_metrics(
    topk: np.ndarray, target: np.ndarray, metadata: np.ndarray, fields: Sequence[str], group_field: str, k: int,
) -> Metrics:
    """Dollar Street (k=5: ``acc_top5_*``) and GeoDE / generic worst-group tasks (k=1: ``acc_*``)."""
    correct = (topk[:, :k] == np.asarray(target)[:, None]).any(axis=1)
    return group_accuracy("acc_top5" if k == 5 else "acc", correct, metadata, fields, [group_field])


# ----------------------------------------------------------------------------------------------
# FairFace / UTKFace

FAIRFACE_OBJECTIVES = ("race", "gender", "age", "toxic")


def fairface_metrics(pred: np.ndarray, metadata: np.ndarray, fields: Sequence[str]) -> Metrics:
    """The paper's fairness tables from per-objective predictions ``pred`` (N, 4: race, gender, age, toxic)."""
    meta = np.asarray(metadata, dtype=np.int64)
    col = {f: meta[:, i] for i, f in enumerate(fields)}
    p = {o: pred[:, i] for i, o in enumerate(FAIRFACE_OBJECTIVES)}
    out: Metrics = {}
    # race as white (index 1) vs non-white, compared to race_binary; gender and age; by race_binary
    out.update(group_accuracy("acc_race", (p["race"] != 1).astype(np.int64) == col["race_binary"], meta, fields,
                              ["race_binary"]))
    for label in ("gender", "age"):
        out.update(group_accuracy(f"acc_{label}", p[label] == col[label], meta, fields, ["race_binary"]))
    out.update(group_accuracy("acc_gender_x", p["gender"] == col["gender"], meta, fields, ["gender", "race"]))
    # "accuracy" against an all-ones target = share of images whose toxic prediction is in the class range
    out.update(group_accuracy("toxicity_crime", p["toxic"] >= 18, meta, fields, ["race"]))
    out.update(group_accuracy("toxicity_nonhuman", (p["toxic"] >= 14) & (p["toxic"] < 18), meta, fields, ["race"]))
    return out


# ----------------------------------------------------------------------------------------------
# retrieval


def retrieval_metrics(image_emb: Any, text_emb: Any, text_image: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                      chunk: int = 1024) -> Metrics:
    """CLIP-style recall@k from L2-normalised embeddings; ``text_image[j]`` is caption j's image index.

    ``image_retrieval_recall@k``: share of captions whose image is among their top-k images;
    ``text_retrieval_recall@k``: share of images with at least one caption among their top-k captions.
    Computed in row chunks, so memory stays bounded at MSCOCO's 25k x 5k scores. Scores are formed as
    clip_benchmark forms them (texts @ images.T, transposed for text retrieval) and ``torch.topk`` runs
    once per k, as its ``recall_at_k`` does: identical captions of different images tie exactly, and
    topk breaks ties differently for different k.
    """
    import torch

    img = torch.as_tensor(image_emb, dtype=torch.float32)
    txt = torch.as_tensor(text_emb, dtype=torch.float32)
    owner = torch.as_tensor(np.asarray(text_image, dtype=np.int64))
    img_hits = {k: 0 for k in ks}
    for s in range(0, len(txt), chunk):
        scores = txt[s:s + chunk] @ img.T
        for k in ks:
            top = scores.topk(min(k, len(img)), dim=1)[1]
            img_hits[k] += int((top == owner[s:s + chunk, None]).any(dim=1).sum())
    txt_hits = {k: 0 for k in ks}
    for s in range(0, len(img), chunk):
        scores = (txt @ img[s:s + chunk].T).T
        for k in ks:
            top = scores.topk(min(k, len(txt)), dim=1)[1]
            txt_hits[k] += int((owner[top] == torch.arange(s, s + len(top))[:, None]).any(dim=1).sum())
    out: Metrics = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = img_hits[k] / len(txt)
        out[f"text_retrieval_recall@{k}"] = txt_hits[k] / len(img)
    if 1 in ks:
        out["mean_recall@1"] = (out["image_retrieval_recall@1"] + out["text_retrieval_recall@1"]) / 2
    return out


# ----------------------------------------------------------------------------------------------
# WinoGAViL


def winogavil_example_score(similarity: np.ndarray, y_true: np.ndarray) -> float:
    """Jaccard index between the true associations and the top-n candidates (n = number of true ones)."""
    y_true = np.asarray(y_true, dtype=bool)
    n_assoc = int(y_true.sum())
    top = np.argsort(similarity)[-n_assoc:] if n_assoc else np.array([], dtype=np.int64)
    y_pred = np.isin(np.arange(len(similarity)), top)
    union = np.logical_or(y_true, y_pred).sum()
    return float(np.logical_and(y_true, y_pred).sum() / union) if union else 0.0


def winogavil_metrics(scores: np.ndarray, n_candidates: np.ndarray) -> Metrics:
    """Mean Jaccard overall and per candidate-count group (5, 6, 10, 12, 5-6, 10-12); empty groups None."""
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(n_candidates)

    def mean(mask: np.ndarray) -> float | None:
        return _f(scores[mask].mean()) if mask.any() else None

    return {
        "avg_jaccard_score": mean(np.ones(len(scores), dtype=bool)),
        "jaccard_score_5": mean(groups == 5),
        "jaccard_score_6": mean(groups == 6),
        "jaccard_score_10": mean(groups == 10),
        "jaccard_score_12": mean(groups == 12),
        "jaccard_score_5-6": mean(groups <= 6),
        "jaccard_score_10-12": mean(groups >= 10),
    }
