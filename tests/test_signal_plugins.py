"""A new signal reading image pixels, plus a filter on it, added as ONE plug-in file outside the package.

``tests/plugins/brightness.py`` registers the ``brightness`` signal (mean pixel value, read from the
pool's shards) and the ``bright`` filter. The selection is checked against an independent reader
(Python's ``tarfile`` + PIL, row by row); the signal is cached and combined with ``--where``; and no
file of the package changed to make this work.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from datacomp.errors import DataCompError
from datacomp.filters import run_filter
from datacomp.uids import hex_to_uids, read_subset

PLUGIN = Path(__file__).parent / "plugins" / "brightness.py"
SRC = Path(__file__).resolve().parent.parent / "src" / "datacomp"
BRIGHT = 130.0


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def package_hash() -> str:
    return _tree_hash(SRC)


@pytest.fixture(scope="module")
def reference(world) -> dict[str, float]:
    """uid -> mean pixel value, read with tarfile + PIL (not the project's tar reader or signal code)."""
    from PIL import Image

    out: dict[str, float] = {}
    for tar in sorted(Path(world.shards).glob("*.tar")):
        with tarfile.open(tar) as tf:
            members: dict[str, dict[str, bytes]] = {}
            for m in tf.getmembers():
                key, _, ext = m.name.partition(".")
                members.setdefault(key, {})[ext] = tf.extractfile(m).read()
        for parts in members.values():
            img = next((parts[e] for e in ("jpg", "png", "webp") if e in parts), None)
            if img is not None:
                uid = json.loads(parts["json"])["uid"]
                out[uid] = float(np.asarray(Image.open(io.BytesIO(img)).convert("RGB")).mean(dtype=np.float64))
    return out


def _rows(meta: Path) -> list[dict]:
    return [r for f in sorted(meta.glob("*.parquet")) for r in pq.read_table(f, columns=["uid", "text"]).to_pylist()]


def _uids(hexes: list[str]) -> set[tuple[int, int]]:
    u = hex_to_uids(np.asarray(hexes, dtype="U32"))
    return set(zip(u["f0"].tolist(), u["f1"].tolist()))


def _got(path: Path) -> set[tuple[int, int]]:
    u = read_subset(path)
    return set(zip(u["f0"].tolist(), u["f1"].tolist()))


def test_pixel_signal_plugin_filters_caches_and_combines_with_where(world, reference, package_hash, tmp_path):
    meta = Path(world.metadata)
    rows = _rows(meta)
    assert len(reference) > 100
    vals = np.array(list(reference.values()))
    assert (vals >= BRIGHT).any() and (vals < BRIGHT).any()  # the threshold splits the pool

    sig = tmp_path / "sig"
    s = run_filter("bright", meta, tmp_path / "b.npy", plugins=[str(PLUGIN)], signals_dir=sig, workers=1,
                   progress=False)
    want = _uids([r["uid"] for r in rows if reference.get(r["uid"], -1.0) >= BRIGHT])
    assert _got(tmp_path / "b.npy") == want and s["kept"] == len(want)
    assert s["config"]["shards_dir"] == str(Path(world.shards).resolve())  # found beside the metadata

    # Cached: one parquet per metadata file, values equal to the reference; a second run reads them.
    files = sorted((sig / "brightness").glob("*.parquet"))
    assert [f.name for f in files] == sorted(p.name for p in meta.glob("*.parquet"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    cached = {}
    for f in files:
        uids = pq.read_table(meta / f.name, columns=["uid"]).column("uid").to_pylist()
        cached.update(zip(uids, pq.read_table(f).column("brightness").to_pylist()))
    have = [u for u in cached if u in reference]
    assert np.allclose([cached[u] for u in have], [reference[u] for u in have], atol=1e-3)

    # Combined with --where (a built-in signal and the plug-in's column), from the cache.
    where = "text_words > 2 AND brightness < 200"
    s2 = run_filter("bright", meta, tmp_path / "w.npy", where=where, plugins=[str(PLUGIN)], signals_dir=sig,
                    workers=1, progress=False)
    want2 = _uids([r["uid"] for r in rows if BRIGHT <= reference.get(r["uid"], -1.0) < 200
                   and len((r["text"] or "").split()) > 2])
    assert _got(tmp_path / "w.npy") == want2 and 0 < s2["kept"] < s["kept"]
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # not recomputed

    assert _tree_hash(SRC) == package_hash  # no package file changed


def test_plugin_through_the_cli(world, tmp_path, capsys, package_hash):
    from datacomp.cli import main

    meta = Path(world.metadata)
    assert main(["filter", "signals", "--list", "--plugin", str(PLUGIN)]) == 0
    listed = capsys.readouterr().out
    assert "brightness" in listed and "images" in listed and "lang" in listed
    out = tmp_path / "c.npy"
    assert main(["filter", "--plugin", str(PLUGIN), "--where", f"brightness >= {BRIGHT}", "--metadata-dir",
                 str(meta), "--shards-dir", str(world.shards), "--output", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["kept"] == read_subset(out).shape[0] > 0
    assert _tree_hash(SRC) == package_hash


def test_pixel_signal_without_shards_is_one_line(world, tmp_path):
    meta = tmp_path / "pool" / "metadata"
    shutil.copytree(world.metadata, meta)
    with pytest.raises(DataCompError, match="--shards-dir") as e:
        run_filter("bright", meta, tmp_path / "b.npy", plugins=[str(PLUGIN)], workers=1, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(DataCompError, match="--shards-dir"):
        run_filter("bright", meta, tmp_path / "b.npy", plugins=[str(PLUGIN)], shards_dir=tmp_path / "nope",
                   workers=1, progress=False)


def test_signal_declarations_are_checked(tmp_path):
    from datacomp.filters import register_signal

    with pytest.raises(DataCompError, match="already provided"):
        register_signal("lang_again", {"lang": "string"})(lambda x: {"lang": []})
    with pytest.raises(DataCompError, match="already provided"):
        register_signal("text_again", {"text": "string"})(lambda x: {"text": []})
    with pytest.raises(DataCompError, match="letters"):
        register_signal("bad-name", {"c": "int32"})(lambda x: {"c": []})


def test_installed_package_adds_signals_through_the_entry_point_group(tmp_path):
    """A distribution on the path declaring ``[datacomp.plugins]`` is found by importlib.metadata."""
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "bright_plugin.py").write_text(PLUGIN.read_text())
    dist = site / "bright_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bright-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[datacomp.plugins]\nbright = bright_plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC.parent)])}
    r = subprocess.run([sys.executable, "-m", "datacomp", "filter", "signals", "--list"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "brightness" in r.stdout and "float" in r.stdout
    r = subprocess.run([sys.executable, "-m", "datacomp", "filter", "list"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and "bright " in r.stdout, r.stderr
    # A broken installed plug-in: one line naming the entry point, no traceback.
    (site / "bright_plugin.py").write_text("raise RuntimeError('boom')\n")
    r = subprocess.run([sys.executable, "-m", "datacomp", "filter", "list"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "'bright'" in r.stderr, r.stderr
