"""A small pool fixture for the filter tests (parquet + npz per shard, assets), built in tmp paths.

Used when the embedded world (``datacomp.synth.make_test_world``) is not available; the rows mix
what each baseline rule must catch: languages, junk and newline captions, small and extreme image
sizes, score ties, clustered embeddings and a class-centric reference set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datacomp.artifacts import write_world_marker

EN = ["a photo of two red stars on a striped background", "green triangle, outline sketch",
      "three blue circles", "the dog is running in the park", "Close-up of a yellow square.",
      "photo of a purple hexagon on grass", "four small crosses", "Dogs!", "a cat sitting on a chair",
      "one orange heart near the top left corner", "an apple and a banana on the table"]
OTHER = ["zwei rote Sterne auf einem gestreiften Hintergrund", "un triangle vert sur fond blanc",
         "tres círculos azules en la hierba", "una foto di un cane che corre", "ein gelbes Quadrat"]
JUNK = ["IMG_2041.jpg", "image", "12345", "", "buy cheap buy cheap star star star", "photo\nof a\nstar",
        "x y", "abcdef"]
CONCEPTS = ["star", "triangle", "circle", "square", "hexagon", "heart", "cross", "dog", "cat"]


def make_pool(root: Path, files: int = 3, rows: int = 400, seed: int = 0, dim: int = 32) -> Path:
    """Write ``root/pool/metadata/<stem>.{parquet,npz}`` and ``root/assets``; return the metadata dir."""
    rng = np.random.default_rng(seed)
    meta = root / "pool" / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    centers = rng.normal(size=(12, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    for i in range(files):
        n = rows + 37 * i
        kind = rng.choice(3, n, p=[0.6, 0.2, 0.2])
        pools = [EN, OTHER, JUNK]
        text = [pools[k][rng.integers(len(pools[k]))] for k in kind]
        text = [t if rng.random() > 0.02 else None for t in text]
        uids = [f"{v:032x}" for v in rng.integers(0, 2**63, n, dtype=np.int64).astype(object) * 2**64
                + rng.integers(0, 2**63, n)]
        w = rng.choice([64, 150, 199, 200, 256, 640, 1024], n)
        h = rng.choice([64, 200, 300, 512, 700, 2000, 3000], n)
        b32 = np.round(rng.uniform(0.1, 0.45, n), 2).astype(np.float32)  # rounding makes ties
        l14 = np.round(rng.uniform(0.15, 0.5, n), 2).astype(np.float32)
        table = pa.table({
            "uid": pa.array(uids, pa.string()), "url": [f"http://127.0.0.1:8765/images/{u}.jpg" for u in uids],
            "text": pa.array(text, pa.string()), "original_width": pa.array(w, pa.int64()),
            "original_height": pa.array(h, pa.int64()), "clip_b32_similarity_score": b32,
            "clip_l14_similarity_score": l14,
            "face_bboxes": pa.array([[] for _ in range(n)], pa.list_(pa.list_(pa.float64()))),
            "sha256": ["0" * 64] * n,
        })
        stem = f"{i:08d}"
        pq.write_table(table, meta / f"{stem}.parquet")
        cl = rng.integers(0, len(centers), n)
        arrays = {}
        for key, d in (("b32", dim // 2), ("l14", dim)):
            for part in ("img", "txt"):
                x = (centers[cl][:, :d] + 0.35 * rng.normal(size=(n, d))).astype(np.float32)
                arrays[f"{key}_{part}"] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
        np.savez(meta / f"{stem}.npz", **arrays)
    assets = root / "assets"
    assets.mkdir(exist_ok=True)
    ref_cl = rng.integers(0, 5, 300)  # the reference set covers 5 of the 12 modes
    ref = centers[ref_cl] + 0.2 * rng.normal(size=(300, dim)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.save(assets / "imagenet_analog_l14_img.npy", ref.astype(np.float32))
    np.save(assets / "imagenet_analog_labels.npy", ref_cl.astype(np.int64))
    (assets / "concepts.txt").write_text("\n".join(CONCEPTS) + "\n")
    write_world_marker(meta, assets)  # (an embedded-world stand-in: its assets are found through the marker)
    return meta
