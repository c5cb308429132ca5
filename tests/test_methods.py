"""The post-DataComp methods (docs/methods/): hand-made embeddings with known answers, then the CLI on the world."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datacomp.filters.methods.density import density_keep, quotas
from datacomp.filters.methods.negclip import negclip_scores
from datacomp.filters.methods.normsim import normsim
from datacomp.filters.methods.semdedup import duplicates_keep, semdedup_keep
from datacomp.uids import read_subset

ROOT = Path(__file__).resolve().parents[1]


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sphere(rng, n, d):
    return _unit(rng.normal(size=(n, d)))


# -- semdedup ------------------------------------------------------------------------------------------

def test_semdedup_removes_planted_duplicates_only_and_keeps_the_farthest_from_the_centroid():
    rng = np.random.default_rng(0)
    d, k = 32, 3
    cents = _sphere(rng, k, d)
    base = []
    cid = []
    for c in range(k):  # 20 distinct points per cluster, spread around its centroid
        base.append(_unit(cents[c] + 0.6 * rng.normal(size=(20, d))))
        cid += [c] * 20
    emb = np.concatenate(base)
    cid = np.array(cid)
    groups = []
    for src in (3, 25, 47, 50):  # plant 2-3 near-copies of four rows
        copies = _unit(emb[src] + 1e-3 * rng.normal(size=(2 + src % 2, d)))
        start = emb.shape[0]
        emb = np.concatenate([emb, copies])
        cid = np.concatenate([cid, np.full(copies.shape[0], cid[src])])
        groups.append([src, *range(start, emb.shape[0])])
    keep = semdedup_keep(emb, cid, cents, eps=0.01)
    planted = {i for g in groups for i in g}
    assert keep[[i for i in range(emb.shape[0]) if i not in planted]].all()  # nothing else removed
    for g in groups:  # exactly one of each group kept: the one with the lowest similarity to its centroid
        sims = [float(_unit(emb[[i]])[0] @ _unit(cents[[cid[i]]])[0]) for i in g]
        assert keep[g].sum() == 1
        assert g[int(np.argmin(sims))] == g[int(np.flatnonzero(keep[g])[0])]


def test_semdedup_compares_across_blocks():
    from datacomp.filters.methods import semdedup as sd

    rng = np.random.default_rng(1)
    e = _sphere(rng, 50, 16)
    e[40] = e[2]  # duplicate far apart in the order, forced into another block
    sim = np.linspace(0, 1, 50)
    old, sd.BLOCK = sd.BLOCK, 7
    try:
        keep = duplicates_keep(e, sim, 0.01)
    finally:
        sd.BLOCK = old
    assert keep.sum() == 49 and not keep[40]


# -- negclip -------------------------------------------------------------------------------------------

def test_negclip_demotes_a_generic_caption_below_a_specific_one_of_equal_clip_score():
    rng = np.random.default_rng(0)
    d, n = 64, 200
    img = _sphere(rng, n, d)
    txt = _unit(img + 0.8 * rng.normal(size=(n, d)) / np.sqrt(d))
    generic = _unit(img.mean(0, keepdims=True))[0]  # close to every image
    # sample 0: specific caption, sample 1: generic caption, both at raw similarity 0.3 to their own image
    for i, direction in ((0, None), (1, generic)):
        other = direction if direction is not None else _unit(rng.normal(size=(1, d)))[0]
        other = _unit((other - (other @ img[i]) * img[i])[None])[0]
        txt[i] = 0.3 * img[i] + np.sqrt(1 - 0.09) * other
    raw = np.einsum("ij,ij->i", img, txt)
    assert raw[0] == pytest.approx(raw[1], abs=1e-6)
    s = negclip_scores(img, txt, batch=64, repeats=4, tau=0.05, rng=np.random.default_rng(3))
    assert s[1] < s[0] - 0.01
    # deterministic given the generator; the batch term is what changes the order
    assert np.array_equal(s, negclip_scores(img, txt, 64, 4, 0.05, np.random.default_rng(3)))


# -- normsim -------------------------------------------------------------------------------------------

def test_normsim_ranks_samples_near_the_target_set_first():
    rng = np.random.default_rng(0)
    d = 32
    targets = _sphere(rng, 10, d)
    near = _unit(targets[:5] + 0.1 * rng.normal(size=(5, d)))
    far = _sphere(rng, 20, d)
    n2, ninf = normsim(np.concatenate([far[:10], near, far[10:]]), targets)
    for col in (n2, ninf):
        assert set(np.argsort(-col)[:5]) == set(range(10, 15))
    assert ninf[10] == pytest.approx(float(near[0] @ targets[0]), abs=1e-5)  # p=inf is the nearest target
    assert n2[10] == pytest.approx(np.sqrt(np.mean((targets @ near[0]) ** 2)), abs=1e-5)  # p=2: RMS


# -- density -------------------------------------------------------------------------------------------

def test_density_keeps_a_larger_share_of_a_sparse_cluster_than_of_a_dense_one():
    rng = np.random.default_rng(0)
    d = 16
    cents = _sphere(rng, 4, d)
    spread = (0.05, 0.05, 0.8, 0.8)  # two dense clusters, two sparse ones, 100 rows each
    emb = np.concatenate([_unit(c + s * rng.normal(size=(100, d)) / np.sqrt(d) * 4) for c, s in zip(cents, spread)])
    cid = np.repeat(np.arange(4), 100)
    keep = density_keep(emb, cid, cents, fraction=0.3, tau=0.1)
    assert keep.sum() == 120
    share = [keep[cid == j].mean() for j in range(4)]
    assert min(share[2], share[3]) > max(share[0], share[1])
    # within a cluster the kept rows are the farthest from the centroid
    j = next(j for j in range(4) if 0 < share[j] < 1)
    sim = emb[cid == j] @ _unit(cents[[j]])[0]
    assert sim[keep[cid == j]].max() <= sim[~keep[cid == j]].min()


def test_density_quotas_are_capped_and_sum_to_the_target():
    cents = np.eye(3, 4)
    q = quotas(np.array([5, 100, 100]), np.array([10.0, 0.01, 0.01]), cents, 60, tau=0.1)
    assert q.tolist()[0] == 5 and q.sum() == 60 and q[1] + q[2] == 55
