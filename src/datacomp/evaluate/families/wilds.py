"""The three WILDS tasks: zero-shot classification plus the WILDS evaluators' group metrics.

``wilds_class_avg`` (iWildCam): class-averaged recall and F1; ``wilds_worst_group`` (Camelyon17):
accuracy per ``group_field`` value and the worst (``acc_wg``); ``wilds_worst_region`` (FMoW): worst
year and worst region. Which applies is the suite entry's family, not the task's key.
"""

from __future__ import annotations

from typing import Any

from datacomp.evaluate import metrics as M
from datacomp.evaluate.families import Family, TaskRun, register_family
from datacomp.evaluate.families.classification import classification_metrics, load_labelled, zeroshot_predictions


def _class_avg(run: TaskRun) -> dict[str, Any]:
    p = zeroshot_predictions(run)
    return {**classification_metrics(p), **M.iwildcam_metrics(p.argmax, p.labels)}


def _worst_group(run: TaskRun) -> dict[str, Any]:
    p = zeroshot_predictions(run)
    field = run.task.group_field
    if not field or p.meta is None:
        raise run.fail("wilds_worst_group needs group_field and metadata_fields in its suite entry")
    out = classification_metrics(p)
    out.update(M.worst_group_metrics(p.argmax, p.labels, p.meta, run.task.metadata_fields, field))
    return out


def _worst_region(run: TaskRun) -> dict[str, Any]:
    p = zeroshot_predictions(run)
    fields = run.task.metadata_fields
    if p.meta is None or not {"region", "year"} <= set(fields):
        raise run.fail("wilds_worst_region needs metadata_fields with region and year")
    return {**classification_metrics(p), **M.fmow_metrics(p.argmax, p.labels, p.meta, fields)}


register_family(Family("wilds_class_avg", _class_avg, load_labelled,
                       description="classification + macro recall / F1 over classes (iWildCam)"))
register_family(Family("wilds_worst_group", _worst_group, load_labelled,
                       description="classification + accuracy per group_field value, acc_wg (Camelyon17)"))
register_family(Family("wilds_worst_region", _worst_region, load_labelled,
                       description="classification + worst year and worst region accuracy (FMoW)"))
