"""Our zero-shot classification and retrieval numbers against CLIP_benchmark's own code, end to end.

The model is the embedded world's shipped reference model (trained: it separates the classes, so a
wrong class order or a wrong caption owner gives different numbers). CLIP_benchmark reads the same
eval tars with its own webdataset loader (``build_wds_dataset``) and scores them with its own
``zeroshot_classification.evaluate`` / ``zeroshot_retrieval.evaluate``; the numbers must agree to 1e-6.
"""

from __future__ import annotations

import builtins
import shutil

import numpy as np
import pytest

from datacomp.evaluate import evaluate

MODEL = "datacomp-ref-b32"
BATCH = 64
TOL = 1e-6


@pytest.fixture(scope="module")
def reference(world):
    pytest.importorskip("clip_benchmark")
    pytest.importorskip("webdataset")
    from datacomp.models import load_model
    from datacomp.synth.embed import weights_path

    ckpt = weights_path("b32")
    if not ckpt.is_file():
        pytest.skip(f"{ckpt}: the reference weights are not installed")
    return ckpt, load_model(MODEL, ckpt)


@pytest.fixture(scope="module")
def ours(world, reference, tmp_path_factory):
    res = evaluate(tmp_path_factory.mktemp("cb") / "out", model=MODEL, checkpoint=reference[0], suite="embedded",
                   tasks=["embedded/shapes", "embedded/count", "embedded/retrieval"], data_dir=world.eval_suite,
                   batch_size=BATCH, device="cpu", progress=False)
    return {r["key"]: r["metrics"] for r in res}


def _loader(dataset, collate=None):
    import torch.utils.data as tud

    # what CLIP_benchmark's CLI builds for a wds/ dataset
    batched = dataset.batched(BATCH, collation_fn=collate) if collate else dataset.batched(BATCH)
    return tud.DataLoader(batched, batch_size=None, shuffle=False, num_workers=0)


@pytest.fixture
def cb_classification(monkeypatch):
    """CLIP_benchmark's classification module; its ``accuracy`` calls ``float()`` on a 1-element array,
    which numpy 2 refuses, so that module's ``float`` gets numpy 1's behaviour (its code is unchanged)."""
    from clip_benchmark.metrics import zeroshot_classification as zsc

    monkeypatch.setattr(zsc, "float", lambda x: builtins.float(np.asarray(x).reshape(-1)[0]), raising=False)
    return zsc


@pytest.mark.parametrize("key", ["embedded/shapes", "embedded/count"])
def test_zeroshot_classification_matches_clip_benchmark(world, reference, ours, cb_classification, key):
    from clip_benchmark.datasets.builder import build_wds_dataset

    _, loaded = reference
    folder = str(world.eval_suite / key.replace("/", "-"))
    ds = build_wds_dataset(key, transform=loaded.preprocess_val, split="test", data_dir=folder)
    ref = cb_classification.evaluate(loaded.model, _loader(ds), loaded.tokenizer, ds.classes, ds.templates, "cpu",
                                     amp=False)
    m = ours[key]
    for k in ("acc1", "mean_per_class_recall"):
        assert m[k] == pytest.approx(ref[k], abs=TOL), k
    if len(ds.classes) >= 5:
        assert m["acc5"] == pytest.approx(ref["acc5"], abs=TOL)
    else:
        assert m["acc5"] is None and np.isnan(ref["acc5"])
    # the model is not degenerate: it predicts many classes, and well above chance
    logits, _ = cb_classification.run_classification(
        loaded.model, cb_classification.zero_shot_classifier(loaded.model, loaded.tokenizer, ds.classes, ds.templates,
                                                             "cpu", amp=False),
        _loader(ds), "cpu", amp=False)
    assert len(np.unique(logits.argmax(1).numpy())) >= min(4, len(ds.classes))
    assert m["acc1"] > 2.0 / len(ds.classes)
    # and the comparison can fail: CLIP_benchmark on the same images with the class order reversed disagrees
    rev = cb_classification.evaluate(loaded.model, _loader(ds), loaded.tokenizer, ds.classes[::-1], ds.templates,
                                     "cpu", amp=False)
    assert abs(rev["acc1"] - m["acc1"]) > 0.05


def test_retrieval_matches_clip_benchmark(world, reference, ours, tmp_path):
    from clip_benchmark.datasets.builder import build_wds_dataset, image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval as zsr

    _, loaded = reference
    folder = tmp_path / "embedded-retrieval"
    shutil.copytree(world.eval_suite / "embedded-retrieval", folder)
    (folder / "dataset_type.txt").write_text("retrieval\n")  # CLIP_benchmark's marker for a retrieval wds set
    ds = build_wds_dataset("embedded/retrieval", transform=loaded.preprocess_val, split="test", data_dir=str(folder))
    ref = zsr.evaluate(loaded.model, _loader(ds, image_captions_collate_fn), loaded.tokenizer, "cpu", amp=False,
                       recall_k_list=[1, 5, 10])
    m = ours["embedded/retrieval"]
    for k in (1, 5, 10):
        for side in ("image", "text"):
            key = f"{side}_retrieval_recall@{k}"
            assert m[key] == pytest.approx(ref[key], abs=TOL), key
    assert m["mean_recall@1"] == pytest.approx((ref["image_retrieval_recall@1"] + ref["text_retrieval_recall@1"]) / 2,
                                               abs=TOL)
    # a trained model retrieves well above chance, so a wrong caption-owner mapping would show
    assert 0.2 < m["image_retrieval_recall@1"] < 1.0 and m["text_retrieval_recall@5"] > 0.5
