"""End-to-end evaluation on small suites written in the CLIP_benchmark layout, with a random-init tiny model."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from datacomp.cli import main
from datacomp.cli.evaluate import print_results
from datacomp.errors import DataCompError
from datacomp.evaluate import aggregate, evaluate, list_tasks, locate, read_results
from datacomp.evaluate.data import convert_hf_parquet, iter_samples
from datacomp.evaluate.model import resolve_model
from datacomp.pool.shards import TarSampleWriter

MODEL = "datacomp-tiny-rn"
PALETTE = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 220], [230, 220, 30], [200, 40, 200], [30, 210, 210],
                    [250, 140, 20], [120, 120, 120]], dtype=np.uint8)
TEMPLATES = ["a photo of a {c}.", "a {c} thing.", "{c}"]


def _png(color: np.ndarray, rng: np.random.Generator, style: int = 0) -> bytes:
    from PIL import Image

    img = np.clip(rng.normal(128, 30, size=(32, 32, 3)), 0, 255).astype(np.uint8)
    if style == 0:
        img[8:24, 8:24] = color
    else:
        img[8:24, 8] = img[8:24, 23] = img[8, 8:24] = img[23, 8:24] = color
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def write_task(root: Path, folder: str, samples: list[dict], classnames: list[str] | None = None,
               templates: list[str] | None = None, shards: int = 1) -> None:
    d = root / folder
    (d / "test").mkdir(parents=True, exist_ok=True)
    per = -(-len(samples) // shards)
    for s in range(shards):
        with TarSampleWriter(d / "test" / f"{s}.tar", mtime=0) as w:
            for i, members in enumerate(samples[s * per:(s + 1) * per]):
                w.write(f"{s:02d}{i:06d}", members)
    (d / "test" / "nshards.txt").write_text(f"{shards}\n")
    (d / "manifest.json").write_text(json.dumps({"samples": len(samples)}))
    if classnames is not None:
        (d / "classnames.txt").write_text("\n".join(classnames) + "\n\n")
        (d / "zeroshot_classification_templates.txt").write_text("\n".join(templates or TEMPLATES) + "\n")


def _npy(v: list[int]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array(v, dtype=np.int64))
    return buf.getvalue()


COLOURS = ["red", "green", "blue", "yellow", "purple", "cyan"]


def build_embedded_suite(root: Path, seed: int = 0) -> Path:
    """Five tasks, one per aggregate group plus a worst-group task; returns the tasks file."""
    rng = np.random.default_rng(seed)
    n = 48
    y = np.arange(n) % 6
    write_task(root, "embedded-shapes", [{"png": _png(PALETTE[c], rng), "cls": str(c)} for c in y], COLOURS,
               shards=2)
    write_task(root, "embedded-shapes_sketch", [{"png": _png(PALETTE[c], rng, 1), "cls": str(c)} for c in y],
               COLOURS)
    y3 = np.arange(30) % 3
    write_task(root, "embedded-colors3", [{"png": _png(PALETTE[c], rng), "cls": str(c)} for c in y3], COLOURS[:3])
    write_task(root, "embedded-captions",
               [{"png": _png(PALETTE[i % 8], rng), "txt": f"a {COLOURS[i % 6]} square number {i}\nsquare {i}"}
                for i in range(24)])
    write_task(root, "embedded-groups", [{"png": _png(PALETTE[c], rng), "cls": str(c), "npy": _npy([i % 3, c])}
                                         for i, c in enumerate(y)], COLOURS)
    tasks = [
        {"key": "embedded/shapes", "name": "Shapes", "family": "zeroshot_classification", "main_metric": "acc1",
         "size": n, "num_classes": 6, "aggregate": "imagenet", "tags": [], "source": "synth"},
        {"key": "embedded/shapes_sketch", "name": "Shapes sketch", "family": "zeroshot_classification",
         "main_metric": "acc1", "size": n, "num_classes": 6, "aggregate": "imagenet_dist_shift"},
        {"key": "embedded/colors3", "name": "Colours", "family": "zeroshot_classification",
         "main_metric": "mean_per_class_recall", "size": 30, "num_classes": 3, "aggregate": "vtab"},
        {"key": "embedded/captions", "name": "Captions", "family": "retrieval", "main_metric": "mean_recall@1",
         "size": 24, "aggregate": "retrieval"},
        {"key": "embedded/groups", "name": "Groups", "family": "fairness", "main_metric": "acc_wg", "size": n,
         "num_classes": 6, "aggregate": None, "metadata_fields": ["region", "y"], "group_field": "region"},
    ]
    f = root / "eval_tasks.json"
    f.write_text(json.dumps(tasks))
    return f


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalsuite")
    return root, build_embedded_suite(root)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    import torch

    from datacomp.models import load_model

    torch.manual_seed(1)
    m = load_model(MODEL)
    p = tmp_path_factory.mktemp("model") / "epoch_latest.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in m.model.state_dict().items()}}, p)
    return p


def _run(out, suite, ckpt, **kw):
    root, tasks_file = suite
    return evaluate(out, model=MODEL, checkpoint=ckpt, suite="embedded", data_dir=root, tasks_file=tasks_file,
                    progress=False, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, suite, ckpt):
    """An output folder with the whole small suite evaluated once (read-only: copy it to change it)."""
    out = tmp_path_factory.mktemp("finished") / "eval"
    return out, _run(out, suite, ckpt)


def test_embedded_suite_lines_and_aggregate(finished, suite):
    out, res = finished
    lines = read_results(out / "eval_results.jsonl")
    assert [r["key"] for r in lines] == [t.key for t in list_tasks("embedded", suite[1])] == [r["key"] for r in res]
    for raw in (out / "eval_results.jsonl").read_text().splitlines():
        json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    by = {r["key"]: r for r in lines}
    assert by["embedded/shapes"]["dataset"] == "Shapes"
    assert set(by["embedded/shapes"]["metrics"]) >= {"acc1", "acc5", "mean_per_class_recall", "main_metric"}
    assert by["embedded/shapes"]["metrics"]["n_samples"] == 48  # both shards read
    assert by["embedded/colors3"]["metrics"]["acc5"] is None  # 3 classes
    assert by["embedded/captions"]["metrics"]["main_metric"] == by["embedded/captions"]["metrics"]["mean_recall@1"]
    g = by["embedded/groups"]["metrics"]
    assert g["main_metric"] == g["acc_wg"] == min(g[f"acc_region:{i}"] for i in range(3))
    assert g["count_region:0"] == 16
    agg = aggregate(lines, "embedded", suite[1])
    m = {k: r["metrics"]["main_metric"] for k, r in by.items()}
    assert agg["ImageNet"] == m["embedded/shapes"] and agg["VTAB"] == m["embedded/colors3"]
    assert agg["ImageNet dist. shifts"] == m["embedded/shapes_sketch"] and agg["Retrieval"] == m["embedded/captions"]
    assert agg["Average"] == pytest.approx(np.mean(list(m.values())))


def test_resume_and_force(tmp_path, finished, suite, ckpt):
    out = tmp_path / "eval"
    shutil.copytree(finished[0], out)
    before = (out / "eval_results.jsonl").read_bytes()
    by = {r["key"]: r for r in finished[1]}
    # resume: nothing re-runs, the file is untouched
    assert _run(out, suite, ckpt) == finished[1]
    assert (out / "eval_results.jsonl").read_bytes() == before
    assert json.loads((out / "eval_record.json").read_text())["counts"] == {"tasks": 5, "ran": 0, "skipped": 5}
    # --force whose data is missing fails before touching the finished lines
    with pytest.raises(DataCompError, match="no data"):
        evaluate(out, model=MODEL, checkpoint=ckpt, suite="embedded", data_dir=tmp_path / "none",
                 tasks_file=suite[1], force=True, progress=False)
    assert (out / "eval_results.jsonl").read_bytes() == before
    # a torn last line (crash mid-write) is dropped and that task re-runs
    with open(out / "eval_results.jsonl", "a") as f:
        f.write('{"key": "embedded/gro')
    # --force re-runs the named task; still one line per task, same numbers (deterministic)
    _run(out, suite, ckpt, tasks=["embedded/colors3"], force=True, cache_dir=tmp_path / "clf")
    again = read_results(out / "eval_results.jsonl")
    assert sorted(r["key"] for r in again) == sorted(by) and again[-1] == by["embedded/colors3"]
    # the classifier went to the disk cache; a fresh process-level cache reads it back, same numbers
    assert len(list((tmp_path / "clf").glob("classifier-*.npy"))) == 1
    from datacomp.evaluate.runner import _CLASSIFIER_CACHE

    _CLASSIFIER_CACHE.clear()
    _run(out, suite, ckpt, tasks=["embedded/colors3"], force=True, cache_dir=tmp_path / "clf")
    assert read_results(out / "eval_results.jsonl")[-1] == by["embedded/colors3"]


def test_results_of_another_model_are_not_mixed(tmp_path, suite, ckpt):
    out = tmp_path / "eval"
    _run(out, suite, ckpt, tasks=["embedded/colors3"])
    _run(out, suite, ckpt, tasks=["embedded/captions"])
    with pytest.raises(DataCompError, match="another model"):
        evaluate(out, model=MODEL, suite="embedded", data_dir=suite[0], tasks_file=suite[1], progress=False)
    # --force replaces every line of the old model, not only the tasks it re-runs
    evaluate(out, model=MODEL, suite="embedded", data_dir=suite[0], tasks_file=suite[1], progress=False,
             tasks=["embedded/colors3"], force=True)
    assert [r["key"] for r in read_results(out / "eval_results.jsonl")] == ["embedded/colors3"]


def test_missing_data_names_task_and_fix(tmp_path, suite, ckpt):
    with pytest.raises(DataCompError, match=r"embedded/shapes.*--data-dir"):
        evaluate(tmp_path / "o", model=MODEL, checkpoint=ckpt, suite="embedded", data_dir=tmp_path / "none",
                 tasks_file=suite[1], tasks=["embedded/shapes"], progress=False)
    with pytest.raises(DataCompError, match=r"cifar10.*datacomp download-evalsets --tasks cifar10"):
        evaluate(tmp_path / "o", model=MODEL, checkpoint=ckpt, suite="datacomp", data_dir=tmp_path / "none",
                 tasks=["cifar10"], progress=False)
    with pytest.raises(DataCompError, match="unknown task"):
        evaluate(tmp_path / "o", model=MODEL, suite="datacomp", data_dir=tmp_path, tasks=["cifar11"], progress=False)
    assert not (tmp_path / "o" / "eval_results.jsonl").exists()
    # a declared shard that is missing is an error too, not a silently shorter test set
    (suite[0] / "embedded-shapes" / "test" / "nshards.txt").write_text("3\n")
    try:
        with pytest.raises(DataCompError, match="lacks 1 of 3 shards"):
            locate(list_tasks("embedded", suite[1])[0], suite[0])
    finally:
        (suite[0] / "embedded-shapes" / "test" / "nshards.txt").write_text("2\n")


def _parquet_sets(tmp: Path, rng: np.random.Generator) -> Path:
    """Hub parquet exports of a retrieval set and WinoGAViL, converted into the layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp / "evalsets"
    pq.write_table(pa.table({
        "image": [{"bytes": _png(PALETTE[i % 8], rng), "path": f"{i}.png"} for i in range(12)],
        "caption": [[f"square {i}", f"a {COLOURS[i % 6]} square"] for i in range(12)],
    }), tmp / "flickr-test.parquet")
    convert_hf_parquet([tmp / "flickr-test.parquet"], data / "wds_retrieval-flickr_1k_test_image_text_retrieval_test",
                       "retrieval", per_shard=5)
    rows = []
    for i, n in enumerate([5, 6, 10, 12, 10]):
        cands = [f"c{j}" for j in range(n)]
        rows.append({"cue": ["Apple", "dog", "Ice", "sun", "Ocean"][i], "candidates": cands,
                     "associations": cands[: 1 + i % 3],
                     "candidate_images": [{"bytes": _png(PALETTE[j % 8], rng), "path": None} for j in range(n)]})
    pq.write_table(pa.Table.from_pylist(rows), tmp / "wino-test.parquet")
    convert_hf_parquet([tmp / "wino-test.parquet"], data / "wds_misc-winogavil_test", "winogavil")
    return data


def test_datacomp_families_end_to_end(tmp_path, ckpt, capsys):
    """WILDS, fairness, FairFace, retrieval and WinoGAViL runners on tiny sets named as DataComp's tasks."""
    rng = np.random.default_rng(3)
    data = _parquet_sets(tmp_path, rng)
    y = rng.integers(0, 6, 40)
    fmow = [{"png": _png(PALETTE[c], rng), "cls": str(c), "npy": _npy([i % 4, i % 2, c])} for i, c in enumerate(y)]
    write_task(data, "wds_wilds-fmow_test", fmow, COLOURS)
    write_task(data, "wilds-iwildcam",
               [{"png": _png(PALETTE[c], rng), "cls": str(c), "npy": _npy([0] * 8 + [c])} for c in y], COLOURS)
    write_task(data, "fairness-dollar_street",
               [{"png": _png(PALETTE[c], rng), "cls": str(c), "npy": _npy([i % 4, 0, 1])} for i, c in enumerate(y)],
               COLOURS)
    ff_names = [f"race:{r}" for r in ("black", "white", "indian")] + ["gender:man", "gender:woman"] + \
        [f"age:{a}" for a in ("0-2", "3-9", "10-19")] + [f"toxic:{t}" for t in [*COLOURS, *COLOURS, *COLOURS, "thief"]]
    ff_tpl = ["race:a photo of a {c} person", "gender:a photo of a {c}", "age:a photo of a person {c} years old",
              "toxic:a photo of a {c}"]
    write_task(data, "wds_fairface_test",
               [{"png": _png(PALETTE[i % 8], rng), "npy": _npy([i % 3, i % 2, i % 3, int(i % 3 != 1)])}
                for i in range(20)], ff_names, ff_tpl)
    keys = ["wilds/fmow", "wilds/iwildcam", "fairness/dollar_street", "fairness/fairface",
            "retrieval/flickr_1k_test_image_text_retrieval", "misc/winogavil"]
    res = evaluate(tmp_path / "out", model=MODEL, checkpoint=ckpt, suite="datacomp", tasks=keys, data_dir=data,
                   progress=False, batch_size=16)
    by = {r["key"]: r["metrics"] for r in res}
    assert [r["dataset"] for r in res] == ["FMoW", "iWildCam", "Dollar Street", "FairFace", "Flickr", "WinoGAViL"]
    f = by["wilds/fmow"]
    assert f["main_metric"] == f["acc_worst_region"] == min(f[f"acc_region:{i}"] for i in range(4))
    assert {"acc_worst_year", "count_year:1", "acc1"} <= set(f)
    assert by["wilds/iwildcam"]["main_metric"] == by["wilds/iwildcam"]["F1-macro_all"]
    assert by["fairness/dollar_street"]["main_metric"] == by["fairness/dollar_street"]["acc_top5_wg"]
    ff = by["fairness/fairface"]
    assert ff["main_metric"] is None and "acc_gender_x_race:2_gender:1" in ff and "toxicity_crime_wg" in ff
    assert 0 <= by["retrieval/flickr_1k_test_image_text_retrieval"]["image_retrieval_recall@10"] <= 1
    w = by["misc/winogavil"]
    assert w["main_metric"] == w["jaccard_score_10-12"] and w["jaccard_score_5"] is not None
    assert sum(1 for _ in iter_samples(locate(list_tasks()[32], data), lambda im: im)) == 5
    print_results(res, "datacomp")  # the fairness tables and the "no aggregate yet" note
    out = capsys.readouterr().out
    assert "FairFace: accuracy, white vs non-white" in out and "middle eastern" in out and "missing 33" in out


def test_model_from_train_folders(tmp_path, ckpt):
    d = tmp_path / "run" / "exp"
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "epoch_latest.pt").write_bytes(ckpt.read_bytes())
    with open(d / "info.pkl", "wb") as f:
        pickle.dump({"scale": "tiny", "scale_config": {"model": MODEL}, "checkpoint": Path("/gone/epoch_latest.pt")},
                    f)
    spec = resolve_model(train_output_dir=tmp_path / "run")  # one experiment below: found
    assert spec.name == MODEL and spec.checkpoint == d / "checkpoints" / "epoch_latest.pt" and spec.scale == "tiny"
    (d / "train_record.json").write_text(json.dumps({"config": {"model": MODEL}, "checkpoint": str(ckpt)}))
    assert resolve_model(train_output_dir=d).checkpoint == ckpt
    with pytest.raises(DataCompError, match="no model"):
        resolve_model()


def test_cli_evaluate_and_tasks(tmp_path, finished, suite, ckpt, capsys):
    root, tasks_file = suite
    shutil.copytree(finished[0], tmp_path / "o")
    rc = main(["evaluate", "--model", MODEL, "--checkpoint", str(ckpt), "--data-dir", str(root), "--tasks-file",
               str(tasks_file), "--output-dir", str(tmp_path / "o"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "ImageNet dist. shifts" in out and "Average" in out
    assert len(read_results(tmp_path / "o" / "eval_results.jsonl")) == 5
    rc = main(["evaluate", "--model", MODEL, "--suite", "datacomp", "--tasks", "imagenet1k,cifar10", "--data-dir",
               str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "o2")])
    assert rc == 2 and "imagenet1k" in capsys.readouterr().err
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "40 tasks, 38 scored" in out and "WinoGAViL" in out
    assert main(["tasks", "--suite", "embedded", "--tasks-file", str(tasks_file)]) == 0
    assert "embedded/groups" in capsys.readouterr().out


def test_world_eval_suite(world, ckpt, tmp_path):
    """The embedded world's own suite (its eval_tasks.json beside the data is picked up)."""
    keys = ["embedded/count", "embedded/retrieval", "embedded/fairness"]
    res = evaluate(tmp_path / "e", model=MODEL, checkpoint=ckpt, suite="embedded", tasks=keys,
                   data_dir=world.eval_suite, progress=False)
    by = {r["key"]: r["metrics"] for r in res}
    assert list(by) == keys
    assert by["embedded/count"]["acc5"] is None and 0 <= by["embedded/count"]["main_metric"] <= 1
    assert by["embedded/retrieval"]["main_metric"] == by["embedded/retrieval"]["mean_recall@1"]
    fair = by["embedded/fairness"]
    assert fair["main_metric"] == fair["acc_wg"] and any(k.startswith("acc_background:") for k in fair)
    with pytest.raises(DataCompError, match=r"missing 11 \(embedded/shapes, "):
        aggregate(res, "embedded")


@pytest.mark.slow
def test_world_full_suite_aggregate(world, ckpt, tmp_path):
    res = evaluate(tmp_path / "e", model=MODEL, checkpoint=ckpt, suite="embedded", data_dir=world.eval_suite,
                   progress=False)
    tasks = list_tasks("embedded")
    assert [r["key"] for r in res] == [t.key for t in tasks]
    agg = aggregate(res, "embedded")
    main = {r["key"]: r["metrics"]["main_metric"] for r in res}
    assert agg["Average"] == pytest.approx(np.mean(list(main.values())))
    shifts = [t.key for t in tasks if t.aggregate == "imagenet_dist_shift"]
    assert agg["ImageNet dist. shifts"] == pytest.approx(np.mean([main[k] for k in shifts]))
