"""WinoGAViL: per example, the Jaccard index of the top-n candidate images for a cue and the true ones."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.errors import DataCompError
from datacomp.evaluate import metrics as M
from datacomp.evaluate.data import Sample, decode_image, image_bytes, read_text
from datacomp.evaluate.families import Family, TaskRun, register_family
from datacomp.evaluate.registry import EvalTask

_CANDIDATE_RE = re.compile(r"^(\d+)\.(webp|png|jpg|jpeg)$")


def load_example(key: str, members: dict[str, bytes], task: EvalTask, preprocess: Any, where: Path) -> Sample:
    """``json`` (cue, candidates, associations) + candidate images ``<i>.<ext>`` in index order."""
    try:
        info = json.loads(read_text(members, "json", task, where, key))
    except json.JSONDecodeError as e:
        raise DataCompError(f"{where}: sample {key}: json does not parse ({e.msg})") from None
    if not (isinstance(info, dict) and isinstance(info.get("cue"), str)
            and isinstance(info.get("candidates"), list) and isinstance(info.get("associations"), list)):
        raise DataCompError(f"{where}: sample {key}: json needs cue (text), candidates and associations (lists)")
    cands = sorted((int(m.group(1)), v) for ext, v in members.items() if (m := _CANDIDATE_RE.match(ext)))
    if len(cands) != len(info["candidates"]):
        raise DataCompError(f"{where}: sample {key} has {len(cands)} images for {len(info['candidates'])} "
                            f"candidates (task {task.key})")
    return Sample([preprocess(decode_image(v, where, f"{key}.{i}")) for i, v in cands], wino=info)


def _prompt(cue: str) -> str:
    cue = cue.lower()
    return f"An {cue}" if cue[:1] in ("a", "e", "i", "o", "u") else f"A {cue}"


def run_winogavil(run: TaskRun) -> dict[str, Any]:
    """Unnormalised text . image similarity per example (as the original), many examples per forward pass."""
    scores, groups = [], []
    pending: list[Sample] = []

    def flush() -> None:
        feats = run.encode_images([im for s in pending for im in s.image], normalize=False, amp=run.amp).cpu()
        prompts = run.encode_texts([_prompt(s.wino["cue"]) for s in pending], normalize=False, amp=run.amp).cpu()
        off = 0
        for i, s in enumerate(pending):
            n = len(s.image)
            sim = (prompts[i:i + 1] @ feats[off:off + n].T).squeeze(0).numpy()
            y_true = np.isin(s.wino["candidates"], s.wino["associations"])
            scores.append(M.winogavil_example_score(sim, y_true))
            groups.append(n)
            off += n
        pending.clear()

    for s in run.samples():
        pending.append(s)
        if sum(len(p.image) for p in pending) >= run.batch_size:
            flush()
    if pending:
        flush()
    if not scores:
        raise run.fail("holds no examples")
    return M.winogavil_metrics(np.array(scores), np.array(groups))


def hub_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Hub parquet row (``cue``, ``candidates``, ``associations``, ``candidate_images``) as tar members."""
    members: dict[str, Any] = {"json": {k: row[k] for k in ("cue", "candidates", "associations")}}
    for i, im in enumerate(row["candidate_images"]):
        members[f"{i}.jpg"] = image_bytes(im)
    return members


register_family(Family("winogavil", run_winogavil, load_example, aggregate="retrieval", needs_classnames=False,
                       hub_rows=hub_row, description="cue -> candidate images, Jaccard by candidate count"))
