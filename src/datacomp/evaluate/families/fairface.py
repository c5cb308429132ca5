"""FairFace / UTKFace: ``objective:``-prefixed class names and templates split into four classifiers.

No main metric: the paper's tables (race / gender / age accuracy by ``race_binary``, gender by
race x gender, crime / non-human classification by race) from the per-objective predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datacomp.evaluate import metrics as M
from datacomp.evaluate.data import Sample, read_image, read_metadata
from datacomp.evaluate.families import Family, TaskRun, register_family
from datacomp.evaluate.registry import EvalTask


def load_face(key: str, members: dict[str, bytes], task: EvalTask, preprocess: Any, where: Path) -> Sample:
    """Image + ``npy`` metadata (age, gender, race, race_binary); no class label."""
    return Sample(read_image(members, preprocess, task, where, key),
                  meta=read_metadata(members, task, where, key))


def run_fairface(run: TaskRun) -> dict[str, Any]:
    by_obj: dict[str, dict[str, list[str]]] = {o: {"classnames": [], "templates": []} for o in M.FAIRFACE_OBJECTIVES}
    for kind, lines in (("templates", run.data.templates or []), ("classnames", run.data.classnames or [])):
        for line in lines:
            obj, _, rest = line.partition(":")
            if obj not in by_obj:
                raise run.fail(f"{kind} line {line!r} lacks a race:/gender:/age:/toxic: prefix")
            by_obj[obj][kind].append(rest)
    Ws = [run.classifier(by_obj[o]["classnames"], by_obj[o]["templates"]) for o in M.FAIRFACE_OBJECTIVES]
    preds, metas = [], []
    for batch in run.batches():
        f = run.encode_images([s.image for s in batch])
        preds.append(np.stack([(100.0 * f @ W).argmax(dim=1).cpu().numpy() for W in Ws], axis=1))
        metas.append(np.stack([s.meta for s in batch]))
    if not preds:
        raise run.fail("holds no samples")
    return M.fairface_metrics(np.concatenate(preds), np.concatenate(metas), run.task.metadata_fields)


register_family(Family("fairface", run_fairface, load_face,
                       description="FairFace/UTKFace tables: race/gender/age accuracy by group, toxicity shares"))
