"""Metric families and aggregation, each checked against an independent computation or a known answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, jaccard_score, recall_score

from datacomp.errors import DataCompError
from datacomp.evaluate import aggregate, list_tasks, read_results
from datacomp.evaluate import metrics as M
from datacomp.evaluate.fairness import fairness_tables


def _cls(logits: np.ndarray, y: np.ndarray) -> dict:
    return M.classification_metrics(M.topk_predictions(logits, 5), logits.argmax(1), y, logits.shape[1])


def test_classification_matches_independent(rng):
    logits = rng.normal(size=(500, 12)).astype(np.float32)
    y = rng.integers(0, 12, 500)
    m = _cls(logits, y)
    order = np.argsort(-logits, axis=1)
    assert m["acc1"] == pytest.approx(np.mean(order[:, 0] == y), abs=1e-12)
    assert m["acc5"] == pytest.approx(np.mean([y[i] in order[i, :5] for i in range(500)]), abs=1e-12)
    assert m["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(y, logits.argmax(1)), abs=1e-12)


def test_classification_known_answers():
    C, n = 8, 40
    y = np.repeat(np.arange(C), n // C)
    perfect = np.eye(C, dtype=np.float32)[y] * 10
    assert _cls(perfect, y) == {"acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}
    constant = np.zeros((n, C), dtype=np.float32)  # argmax = class 0 for everyone: chance on balanced labels
    m = _cls(constant, y)
    assert m["mean_per_class_recall"] == pytest.approx(1 / C)
    # fewer than 5 classes: acc5 is None (the original's NaN, which is not JSON)
    y3 = np.array([0, 1, 2, 2])
    assert _cls(np.eye(3, dtype=np.float32)[y3], y3)["acc5"] is None


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_ignores_classes_absent_from_targets(rng):
    y = rng.choice([0, 3, 7], 300)
    pred = rng.integers(0, 9, 300)
    assert M.balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)


def test_iwildcam_macro_recall_f1_match_sklearn(rng):
    y = rng.choice([1, 4, 5, 9, 20], 400)
    pred = np.where(rng.random(400) < 0.5, y, rng.integers(0, 25, 400))
    m = M.iwildcam_metrics(pred, y)
    labels = np.unique(y)
    assert m["F1-macro_all"] == pytest.approx(f1_score(y, pred, average="macro", labels=labels), abs=1e-12)
    assert m["recall-macro_all"] == pytest.approx(recall_score(y, pred, average="macro", labels=labels), abs=1e-12)
    assert m["acc_avg"] == pytest.approx(np.mean(pred == y))


def _brute_recall(img, txt, owner, k):
    s = txt @ img.T
    i2t = np.mean([owner[j] in np.argsort(-s[j])[:k] for j in range(len(txt))])
    t2i = np.mean([any(owner[j] == i for j in np.argsort(-s[:, i])[:k]) for i in range(len(img))])
    return i2t, t2i


def test_retrieval_matches_brute_force(rng):
    img = rng.normal(size=(40, 16)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    owner = np.repeat(np.arange(40), 3)
    txt = img[owner] + rng.normal(scale=1.2, size=(120, 16)).astype(np.float32)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    m = M.retrieval_metrics(img, txt, owner, chunk=7)
    for k in (1, 5, 10):
        i2t, t2i = _brute_recall(img, txt, owner, k)
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx(i2t)
        assert m[f"text_retrieval_recall@{k}"] == pytest.approx(t2i)
    assert m["mean_recall@1"] == pytest.approx((m["image_retrieval_recall@1"] + m["text_retrieval_recall@1"]) / 2)
    perfect = M.retrieval_metrics(img, img[owner], owner)
    assert perfect["image_retrieval_recall@1"] == 1.0 and perfect["text_retrieval_recall@1"] == 1.0


def test_group_accuracy_brute_force_and_naming(rng):
    fields = ["region", "country"]
    meta = np.stack([rng.choice([0, 1, 3], 200), rng.integers(0, 5, 200)], axis=1)  # region 2 is empty
    correct = rng.random(200) < 0.6
    m = M.group_accuracy("acc", correct, meta, fields, ["region"])
    assert m["acc_avg"] == pytest.approx(correct.mean())
    for r in (0, 1, 3):
        assert m[f"acc_region:{r}"] == pytest.approx(correct[meta[:, 0] == r].mean())
        assert m[f"count_region:{r}"] == int((meta[:, 0] == r).sum())
    assert m["acc_region:2"] is None and m["count_region:2"] == 0
    assert m["acc_wg"] == pytest.approx(min(correct[meta[:, 0] == r].mean() for r in (0, 1, 3)))
    # two fields: wilds names groups in reverse field order, "race:r_gender:g"
    ff = ["age", "gender", "race", "race_binary"]
    meta2 = np.stack([np.zeros(60, int), rng.integers(0, 2, 60), rng.integers(0, 3, 60), np.zeros(60, int)], 1)
    m2 = M.group_accuracy("acc_gender_x", correct[:60], meta2, ff, ["gender", "race"])
    for g in (0, 1):
        for r in (0, 1, 2):
            mask = (meta2[:, 1] == g) & (meta2[:, 2] == r)
            assert m2[f"count_race:{r}_gender:{g}"] == mask.sum()


def test_fmow_dollar_street_geode_keys(rng):
    y = rng.integers(0, 10, 300)
    pred = np.where(rng.random(300) < 0.5, y, rng.integers(0, 10, 300))
    meta = np.stack([rng.integers(0, 5, 300), rng.integers(0, 3, 300), y], axis=1)
    m = M.fmow_metrics(pred, y, meta, ["region", "year", "y"])
    regions = [(pred == y)[meta[:, 0] == r].mean() for r in range(5)]
    assert m["acc_worst_region"] == pytest.approx(min(regions))
    assert m["acc_worst_year"] == pytest.approx(min((pred == y)[meta[:, 1] == t].mean() for t in range(3)))
    assert "acc_wg" not in m and m["acc_avg"] == pytest.approx(np.mean(pred == y))
    top5 = np.stack([pred, *(rng.integers(0, 10, 300) for _ in range(4))], axis=1)
    ds = M.topk_group_metrics(top5, y, meta, ["income_ds", "income_meta", "region"], "income_ds", 5)
    hit = (top5 == y[:, None]).any(1)
    assert ds["acc_top5_wg"] == pytest.approx(min(hit[meta[:, 0] == g].mean() for g in range(5)))
    geo = M.topk_group_metrics(top5, y, meta[:, :2], ["region", "country"], "region", 1)
    assert geo["acc_wg"] == pytest.approx(min((pred == y)[meta[:, 0] == g].mean() for g in range(5)))


def test_fairface_tables_hand_made():
    fields = ["age", "gender", "race", "race_binary"]
    # race 1 = white (race_binary 0); others non-white (race_binary 1)
    meta = np.array([[2, 0, 1, 0], [3, 1, 1, 0], [2, 0, 0, 1], [5, 1, 2, 1]])
    pred = np.array([[1, 0, 2, 0], [0, 1, 3, 19], [0, 1, 2, 15], [2, 1, 0, 3]])  # race, gender, age, toxic
    m = M.fairface_metrics(pred, meta, fields)
    assert m["acc_race_race_binary:0"] == 0.5 and m["acc_race_race_binary:1"] == 1.0 and m["acc_race_wg"] == 0.5
    assert m["acc_gender_avg"] == 0.75 and m["acc_age_avg"] == 0.75
    assert m["acc_gender_x_race:0_gender:0"] == 0.0 and m["count_race:1_gender:1"] == 1
    assert m["toxicity_crime_race:1"] == 0.5 and m["toxicity_nonhuman_race:0"] == 1.0
    assert m["toxicity_crime_avg"] == 0.25
    tables = fairness_tables({"key": "fairness/utkface", "dataset": "UTKFace", "metrics": m})
    assert tables[0].rows[0] == ["race", 0.5, 1.0, 0.75, 0.5]
    assert tables[1].columns == ["race", "gender 0", "gender 1"] and tables[1].rows[1] == ["white", 1.0, 1.0]
    assert tables[2].rows[1] == ["white", 0.5, 0.0] and tables[2].rows[3] == ["asian", None, None]


def test_winogavil_jaccard_matches_sklearn(rng):
    scores, groups = [], []
    for _ in range(30):
        n = int(rng.choice([5, 6, 10, 12]))
        y = np.zeros(n, bool)
        y[rng.choice(n, int(rng.integers(1, 4)), replace=False)] = True
        sim = rng.normal(size=n)
        s = M.winogavil_example_score(sim, y)
        pred = np.isin(np.arange(n), np.argsort(sim)[-y.sum():])
        assert s == pytest.approx(jaccard_score(y, pred))
        scores.append(s)
        groups.append(n)
    m = M.winogavil_metrics(np.array(scores), np.array(groups))
    g = np.array(groups)
    assert m["jaccard_score_10-12"] == pytest.approx(np.mean(np.array(scores)[g >= 10]))
    perfect = M.winogavil_example_score(np.array([0.9, 0.1, 0.8, 0.0, 0.2]), np.array([1, 0, 1, 0, 0], bool))
    assert perfect == 1.0
    empty = M.winogavil_metrics(np.array([0.5]), np.array([5]))
    assert empty["jaccard_score_12"] is None and json.dumps(empty, allow_nan=False)


# ----------------------------------------------------------------------------------------------
# aggregation, checked against aggregate_scores.py's hard-coded lists

ORIGINAL_GROUPS = {
    "ImageNet": ["ImageNet 1k"],
    "ImageNet dist. shifts": ["ImageNet Sketch", "ImageNet v2", "ImageNet-A", "ImageNet-O", "ImageNet-R", "ObjectNet"],
    "VTAB": ["Caltech-101", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Describable Textures", "EuroSAT",
             "KITTI Vehicle Distance", "Oxford Flowers-102", "Oxford-IIIT Pet", "PatchCamelyon", "RESISC45", "SVHN",
             "SUN397"],
    "Retrieval": ["Flickr", "MSCOCO", "WinoGAViL"],
}


def _synthetic_results(rng) -> list[dict]:
    rows = []
    for t in list_tasks("datacomp"):
        main = float(rng.random()) if t.main_metric else None
        rows.append({"key": t.key, "dataset": t.name, "metrics": {"acc1": 0.1, "main_metric": main}})
    return rows


def test_aggregate_matches_original_formula(rng, tmp_path):
    rows = _synthetic_results(rng)
    path = tmp_path / "eval_results.jsonl"
    # the original writes NaN tokens; they must read back as null
    path.write_text("".join(json.dumps(r) + "\n" for r in rows).replace('"acc1": 0.1', '"acc1": NaN'))
    scored = {r["dataset"]: r["metrics"]["main_metric"] for r in rows if r["metrics"]["main_metric"] is not None}
    assert len(scored) == 38
    expected = {k: float(np.mean([scored[n] for n in names])) for k, names in ORIGINAL_GROUPS.items()}
    expected["Average"] = float(np.mean(list(scored.values())))
    got = aggregate(read_results(path), "datacomp")
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], abs=1e-12)
    assert aggregate(path, "datacomp") == got


def test_aggregate_refuses_missing_and_ignores_extra(rng):
    rows = _synthetic_results(rng)
    with pytest.raises(DataCompError, match=r"missing 1 \(vtab/svhn\)"):
        aggregate([r for r in rows if r["key"] != "vtab/svhn"], "datacomp")
    # a task a user's own suite adds does not change (or break) the DataComp aggregates of the same file
    extra = [*rows, {"key": "my/task", "dataset": "Mine", "metrics": {"main_metric": 0.5}}]
    assert aggregate(extra, "datacomp") == aggregate(rows, "datacomp")
    with pytest.raises(DataCompError, match="twice"):
        aggregate([*rows, rows[0]], "datacomp")


def test_registry_has_the_40_tasks():
    tasks = list_tasks("datacomp")
    assert len(tasks) == 40 and sum(t.main_metric is not None for t in tasks) == 38
    by = {t.key: t for t in tasks}
    assert by["wilds/fmow"].main_metric == "acc_worst_region"
    assert by["wilds/fmow"].source == "djghosh/wds_wilds-fmow_test"
    assert by["fairness/geode"].wds_folder == "wds_geode_test"
    assert by["misc/winogavil"].source == "nlphuji/winogavil"
    counts = {g: sum(t.aggregate == g for t in tasks) for g in ("imagenet", "imagenet_dist_shift", "vtab", "retrieval")}
    assert counts == {"imagenet": 1, "imagenet_dist_shift": 6, "vtab": 13, "retrieval": 3}
