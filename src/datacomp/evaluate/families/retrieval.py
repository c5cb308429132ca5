"""Image-text retrieval (Flickr, MSCOCO, the embedded retrieval task): recall@1/5/10 both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datacomp.evaluate import metrics as M
from datacomp.evaluate.data import Sample, image_bytes, read_image, read_text
from datacomp.evaluate.families import Family, TaskRun, register_family
from datacomp.evaluate.registry import EvalTask


def load_captioned(key: str, members: dict[str, bytes], task: EvalTask, preprocess: Any, where: Path) -> Sample:
    """Image + ``txt`` (one caption per line, blank lines dropped)."""
    s = Sample(read_image(members, preprocess, task, where, key))
    s.captions = [c for c in read_text(members, "txt", task, where, key).splitlines() if c.strip()]
    return s


def run_retrieval(run: TaskRun) -> dict[str, Any]:
    import torch

    imgs, txts, owner = [], [], []
    n_img = 0
    for batch in run.batches():
        imgs.append(run.encode_images([s.image for s in batch], amp=run.amp).cpu())
        caps = [c for s in batch for c in (s.captions or [])]
        owner.extend(n_img + i for i, s in enumerate(batch) for _ in (s.captions or []))
        txts.append(run.encode_texts(caps, amp=run.amp).cpu())
        n_img += len(batch)
    if not imgs or not owner:
        raise run.fail("holds no image-caption samples")
    return M.retrieval_metrics(torch.cat(imgs), torch.cat(txts), np.asarray(owner))


def hub_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Hub parquet row (``image``, ``caption`` str or list) as tar members."""
    caps = row.get("caption")
    caps = [caps] if isinstance(caps, str) else list(caps or [])
    return {"jpg": image_bytes(row["image"]), "txt": "\n".join(c.replace("\n", " ") for c in caps)}


register_family(Family("retrieval", run_retrieval, load_captioned, aggregate="retrieval", needs_classnames=False,
                       hub_rows=hub_row, description="image<->text recall@1/5/10, mean_recall@1"))
