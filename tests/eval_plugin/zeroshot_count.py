"""An evaluation family added from outside the package: zero-shot counting scored as ordinal error.

The task's class names are counts in increasing order ("one", "two", ...); a prediction one class off
is a near miss. Registered here, loaded with ``datacomp evaluate --plugin tests/eval_plugin/zeroshot_count.py``
and used by ``counting_suite.yaml`` beside it. It uses only the public family API: a loader built from
``datacomp.evaluate.data``'s decoding helpers and a metric over :class:`TaskRun`'s batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datacomp.evaluate.data import Sample, read_image, read_label
from datacomp.evaluate.families import Family, TaskRun, register_family


def load(key: str, members: dict[str, bytes], task: Any, preprocess: Any, where: Path) -> Sample:
    return Sample(read_image(members, preprocess, task, where, key), label=read_label(members, task, where, key))


def run(run: TaskRun) -> dict[str, Any]:
    W = run.classifier()
    preds, labels = [], []
    for batch in run.batches():
        logits = run.encode_images([s.image for s in batch]) @ W
        preds.append(logits.argmax(dim=1).cpu().numpy())
        labels.append(np.array([s.label for s in batch]))
    err = np.abs(np.concatenate(preds) - np.concatenate(labels))
    return {"count_mae": float(err.mean()), "acc_within_1": float((err <= 1).mean()), "acc1": float((err == 0).mean()),
            "n_samples": int(err.size)}


register_family(Family("zeroshot_count", run, load, aggregate="counting",
                       description="zero-shot counting: mean absolute count error, accuracy within one"))
