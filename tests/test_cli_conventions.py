"""The CLI's conventions, checked on the real parser: help for every flag of every command (nested ones
included, so commands added later are covered), -v/-q after the command, no prefix matching, the
filter command/helper split with the old spellings, --config (YAML, TOML), completion, --json, the
one `error:` line for user mistakes, a light --help, and docs/cli.md generated from the parser."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datacomp.cli import build_parser, main, parse

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
UIDS = ["0" * 31 + "3", "0" * 31 + "1", "f" * 32, "0" * 31 + "1"]


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, child in a.choices.items():
                yield (*path, name), child
                yield from _walk(child, (*path, name))


PARSER = build_parser()
COMMANDS = list(_walk(PARSER))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own exits (--help, usage errors)
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_walk_sees_every_registered_command():
    names = {p[0] for p, _ in COMMANDS}
    assert {"download", "filter", "filter-signals", "filter-centroids", "filter-targets", "filter-list", "reshard",
            "train", "evaluate", "report", "submit", "leaderboard", "demo", "synth", "subset", "completion"} <= names
    assert ("subset", "merge") in {p for p, _ in COMMANDS} and ("synth", "serve") in {p for p, _ in COMMANDS}
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_flag_has_help_and_no_default_none(path, capsys):
    parser = dict(COMMANDS)[path]
    assert parser.allow_abbrev is False, path
    missing = [a.option_strings or a.dest for a in parser._actions
               if not isinstance(a, argparse._SubParsersAction) and a.help is not argparse.SUPPRESS
               and not (a.help or "").strip()]
    assert not missing, f"{' '.join(path)}: flags without help: {missing}"
    rc, out, _ = _run(capsys, *path, "--help")
    assert rc == 0 and "usage: datacomp" in out
    assert "(default: None)" not in out and "(default: [])" not in out, out
    hidden = {s for a in parser._actions for s in getattr(a, "hidden_aliases", ())}
    assert not [s for s in hidden if f"{s} " in out or f"{s}," in out or out.rstrip().endswith(s)], (path, hidden)


def test_top_level_help(capsys):
    assert PARSER.allow_abbrev is False
    rc, out, _ = _run(capsys, "--help")
    assert rc == 0 and "(default: None)" not in out and "filter-signals" in out


def test_verbose_and_quiet_after_the_command():
    for argv in (["-v", "scales"], ["scales", "-v"], ["scales", "--verbose"]):
        assert PARSER.parse_args(argv).verbose is True, argv
    assert PARSER.parse_args(["scales"]).verbose is False
    a = PARSER.parse_args(["subset", "info", "x.npy", "-q"])
    assert a.quiet is True and a.verbose is False
    a = PARSER.parse_args(["-v", "subset", "info", "x.npy", "-q"])  # the global value is not overwritten
    assert a.verbose is True and a.quiet is True


def test_verbose_after_the_command_shows_the_traceback(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"zz\n")
    rc, _, err = _run(capsys, "subset", "from-text", bad, "-o", tmp_path / "x.npy", "-v")
    assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
    rc, _, err = _run(capsys, "subset", "from-text", bad, "-o", tmp_path / "x.npy")
    assert rc == 2 and "Traceback" not in err


def test_prefixes_are_refused(capsys, tmp_path):
    rc, _, err = _run(capsys, "download", "-o", tmp_path, "--overwrite-meta", "--skip-shards")
    assert rc == 2 and "unrecognized arguments: --overwrite-meta" in err
    rc, _, err = _run(capsys, "reshard", "-i", "a", "-o", "b", "-s", "c", "--overwr")
    assert rc == 2 and "--overwr" in err
    assert not (tmp_path / "metadata").exists()


def test_old_spellings_still_work_and_are_hidden():
    p = PARSER
    a = p.parse_args(["filter", "--name", "no_filter", "--metadata_dir", "M", "--save_path", "s.npy",
                      "--num_workers", "3"])
    assert (a.metadata_dir, a.output, a.workers) == ("M", "s.npy", 3)
    a = p.parse_args(["download", "--data_dir", "D", "--processes_count", "4", "--thread_count", "8",
                      "--skip_shards"])
    assert (a.data_dir, a.workers, a.thread_count, a.skip_shards) == ("D", 4, 8, True)
    assert p.parse_args(["download", "--data-dir", "D", "--processes-count", "5"]).workers == 5
    a = p.parse_args(["train", "--scale", "tiny", "--data_dir", "S", "--output_dir", "O", "--exp_name", "E"])
    assert (a.data_dir, a.output, a.exp_name) == ("S", "O", "E")
    assert p.parse_args(["train", "--scale", "tiny", "--data-dir", "S", "--output-dir", "O"]).output == "O"
    assert p.parse_args(["reshard", "-i", "a", "--output-dir", "b", "-s", "c"]).output == "b"
    assert p.parse_args(["evaluate", "--train_output_dir", "T", "--output_dir", "O"]).output == "O"
    assert p.parse_args(["demo", "--out", "runs/x"]).output == "runs/x"
    assert p.parse_args(["synth", "pool", "--out", "w"]).output == Path("w")
    assert p.parse_args(["embed", "--metadata-dir", "m", "--shards", "s", "--output-dir", "o"]).output == Path("o")
    assert p.parse_args(["download-evalsets", "--data-dir", "E"]).output == "E"
    assert p.parse_args(["filter-centroids", "--metadata_dir", "m", "--save_path", "c.npy"]).output == Path("c.npy")


def test_filter_is_a_command_and_its_helpers_have_their_own_names(capsys, tmp_path):
    rc, _, err = _run(capsys, "filter", "--nme", "basic_filter")
    assert rc == 2 and "unrecognized arguments: --nme basic_filter" in err and "invalid choice" not in err
    assert "usage: datacomp filter " in err
    rc, new, _ = _run(capsys, "filter-list")
    rc_old, old, _ = _run(capsys, "filter", "list")
    assert rc == rc_old == 0 and new == old and "basic_filter" in new
    rc, new, _ = _run(capsys, "-v", "filter", "signals", "--list")
    assert rc == 0 and "lang" in new
    rc, out, _ = _run(capsys, "filter-list", "--json")
    assert rc == 0 and {"no_filter", "basic_filter", "clip_score"} <= {f["name"] for f in json.loads(out)}
    # the old spelling's flags reach the helper, including its old flag spellings
    a = PARSER.parse_args(__import__("datacomp.cli", fromlist=["rewrite_argv"]).rewrite_argv(
        ["filter", "build-centroids", "--metadata_dir", "m", "--save_path", "c.npy", "--num_clusters", "7"]))
    assert (a.command, a.metadata_dir, a.output, a.num_clusters) == ("filter-centroids", "m", Path("c.npy"), 7)
    # a filter run needs its inputs; the message names them and the helpers
    rc, _, err = _run(capsys, "filter", "--name", "no_filter")
    assert rc == 2 and "--metadata-dir" in err and "filter-list" in err


def _uid_text(tmp_path: Path) -> Path:
    f = tmp_path / "uids.txt"
    f.write_text("".join(u + "\n" for u in UIDS))
    return f


def _read_uids(path: Path) -> list[str]:
    from datacomp import uids as U

    return list(U.uids_to_hex(U.read_subset(path, validate=False)))


@pytest.mark.parametrize("fmt", ["yaml", "toml"])
def test_config_file_gives_flags_and_the_command_line_overrides(capsys, tmp_path, fmt):
    src = _uid_text(tmp_path)
    cfg = tmp_path / f"c.{fmt}"
    a, b = tmp_path / "a.npy", tmp_path / "b.raw"
    if fmt == "yaml":
        cfg.write_text(f"output: {a}\nraw: false\n")
    else:
        cfg.write_text(f'output = "{a}"\nraw = false\n')
    rc, out, _ = _run(capsys, "subset", "from-text", src, "--config", cfg, "--json")
    assert rc == 0 and json.loads(out) == {"uids": 4, "output": str(a)}
    assert a.read_bytes()[:6] == b"\x93NUMPY"
    assert _read_uids(a) == sorted(UIDS)
    # the command line wins: -o and --raw override the file's output and raw
    rc, _, _ = _run(capsys, "subset", "from-text", src, "-o", b, "--raw", "--config", cfg)
    assert rc == 0 and b.stat().st_size == 16 * len(UIDS) and b.read_bytes()[:6] != b"\x93NUMPY"


def test_config_keys_take_dash_underscore_and_old_spellings_and_are_typed(tmp_path):
    from datacomp.cli import apply_config

    cfg = {"metadata_dir": "m", "save_path": "c.npy", "num-clusters": 7, "compat": True, "workers": "3"}
    parser = dict(_walk(build_parser()))[("filter-centroids",)]
    pending = apply_config(parser, "c.yaml", cfg)
    vals = {d: v for d, (_, v) in pending.items()}
    assert vals == {"metadata_dir": "m", "output": Path("c.npy"), "num_clusters": 7, "compat": True, "workers": 3}


def test_config_errors_are_one_line(capsys, tmp_path):
    src = _uid_text(tmp_path)
    cases = {
        "unknown.yaml": ("outptu: x.npy\n", "unknown key 'outptu'"),
        "badval.yaml": ("output: x.npy\nraw: maybe\n", "raw: expected true or false"),
        "bad.yaml": ("output: [x\n", "not valid YAML"),
        "bad.toml": ("output = \n", "not valid TOML"),
        "list.yaml": ("- a\n- b\n", "expected a mapping"),
    }
    for name, (text, msg) in cases.items():
        (tmp_path / name).write_text(text)
        rc, _, err = _run(capsys, "subset", "from-text", src, "--config", tmp_path / name)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], (name, err)
    (tmp_path / "choice.yaml").write_text("resize-mode: sideways\n")
    rc, _, err = _run(capsys, "download", "-o", tmp_path, "--config", tmp_path / "choice.yaml")
    assert rc == 2 and "invalid choice: 'sideways'" in err and "Traceback" not in err
    rc, _, err = _run(capsys, "subset", "from-text", src, "--config", tmp_path / "missing.yaml")
    assert rc == 2 and "cannot read it" in err


def test_completion_scripts(capsys):
    rc, bash, _ = _run(capsys, "completion", "bash")
    assert rc == 0 and "complete -o filenames -F _datacomp_complete datacomp" in bash
    for word in ("filter-signals", "subset merge", "synth pool", "--overwrite-metadata", "--no-progress"):
        assert word in bash, word
    assert "--save_path" not in bash  # hidden spellings are not offered
    rc, zsh, _ = _run(capsys, "completion", "zsh")
    assert rc == 0 and "bashcompinit" in zsh and "_datacomp_complete" in zsh
    if shutil.which("bash"):
        def complete(*words: str) -> list[str]:
            line = " ".join(words)
            script = (f"{bash}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _datacomp_complete; "
                      'printf "%s\\n" "${COMPREPLY[@]}"')
            return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()

        assert complete("datacomp", "subset", "me") == ["merge"]
        assert set(complete("datacomp", "fil")) == {"filter", "filter-signals", "filter-centroids", "filter-targets",
                                                   "filter-list"}
        # a flag value that is also a command word ("world") does not change the command path
        assert complete("datacomp", "synth", "pool", "--out", "world", "--s") == ["--size", "--seed"]


def test_json_outputs_parse(capsys, tmp_path):
    src = _uid_text(tmp_path)
    rc, out, _ = _run(capsys, "scales", "--json")
    scales = {s["name"]: s for s in json.loads(out)}
    assert rc == 0 and scales["small"]["batch_size"] == 4096 and "tiny" in scales
    rc, out, _ = _run(capsys, "subset", "from-text", src, "-o", tmp_path / "s.npy", "--json")
    assert rc == 0 and json.loads(out)["uids"] == 4
    rc, out, _ = _run(capsys, "subset", "info", tmp_path / "s.npy", "--json")
    info = json.loads(out)
    assert rc == 0 and info["uids"] == 4 and info["sorted"] is True and info["duplicates"] == 1
    assert (info["first"], info["last"]) == ("0" * 31 + "1", "f" * 32)
    other = tmp_path / "o.txt"
    other.write_text("0" * 31 + "3\n" + "0" * 31 + "9\n")
    _run(capsys, "subset", "from-text", other, "-o", tmp_path / "o.npy")
    rc, out, _ = _run(capsys, "subset", "intersect", tmp_path / "s.npy", tmp_path / "o.npy", "-o", tmp_path / "i.npy",
                      "--json")
    assert rc == 0 and json.loads(out) == {"op": "intersect", "inputs": [4, 2], "uids": 1,
                                           "output": str(tmp_path / "i.npy")}
    rc, out, _ = _run(capsys, "tasks", "--list-suites", "--json")
    assert rc == 0 and "datacomp" in {s["suite"] for s in json.loads(out)}
    from datacomp.evaluate import get_suite

    rc, out, _ = _run(capsys, "tasks", "--suite", "datacomp", "--json")
    keys = [t["key"] for t in json.loads(out)["tasks"]]
    assert rc == 0 and keys == [t.key for t in get_suite("datacomp").tasks] and "imagenet1k" in keys


def test_user_mistakes_end_in_one_error_line(capsys, tmp_path):
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(256)) * 4)
    bad_yaml = tmp_path / "suite.yaml"
    bad_yaml.write_text("tasks: [a\n")
    cases = [
        ("subset", "from-text", binary, "-o", tmp_path / "x.npy"),
        ("subset", "from-text", "/bin/ls" if Path("/bin/ls").exists() else binary, "-o", tmp_path / "x.npy"),
        ("subset", "from-parquet", binary, "-o", tmp_path / "x.npy"),
        ("subset", "info", tmp_path / "missing.npy"),
        ("subset", "merge", binary, binary, "-o", tmp_path / "m.npy"),
        ("tasks", "--suite", binary),
        ("tasks", "--suite", bad_yaml),
        ("tasks", "--plugin", binary),
        ("filter-list", "--plugin", tmp_path / "missing.py"),
        ("leaderboard", binary, "--scale", "small"),
        ("report", binary, "-o", tmp_path / "r.html"),
        ("filter", "--name", "no_filter", "--metadata-dir", tmp_path, "-o", tmp_path / "s.npy"),
        ("reshard", "-i", tmp_path, "-o", tmp_path / "out", "-s", binary),
        ("evaluate", "--model", "x", "--suite", bad_yaml, "-o", tmp_path / "e"),
    ]
    for argv in cases:
        rc, _, err = _run(capsys, *argv)
        lines = err.strip().splitlines()
        assert rc in (1, 2) and len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert "Traceback" not in err


def test_library_constants_spelled_in_the_cli_match():
    from datacomp.cli import download as cli_download
    from datacomp.cli import synth as cli_synth
    from datacomp.filters.dedup import DEFAULT_THRESHOLD
    from datacomp.pool.hub import HUB_SCALES
    from datacomp.pool.resize import ENCODE_FORMATS, RESIZE_MODES
    from datacomp.synth.pool import DEFAULT_BASE_URL

    assert cli_download.HUB_SCALES == HUB_SCALES and cli_download.RESIZE_MODES == RESIZE_MODES
    assert tuple(ENCODE_FORMATS) == cli_download.ENCODE_FORMATS
    assert cli_synth.DEFAULT_BASE_URL == DEFAULT_BASE_URL
    dedup_help = dict(COMMANDS)[("dedup",)].format_help()
    assert f"default: {DEFAULT_THRESHOLD}" in dedup_help
    demo = dict(COMMANDS)[("demo",)]
    from datacomp.demo import BASELINES

    filters_help = next(a for a in demo._actions if a.dest == "filters").help
    assert all(name in filters_help for name in BASELINES)  # (specs, not choices: methods and A+B too)


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom datacomp.cli import build_parser\nbuild_parser().format_help()\n"
            "heavy = ('numpy', 'pyarrow', 'torch', 'rich', 'PIL', 'duckdb', 'faiss', 'open_clip', 'pandas', 'fsspec')\n"
            "print(' '.join(m for m in heavy if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    assert r.stdout.strip() == "", f"registering commands imported: {r.stdout}"
    r = subprocess.run([sys.executable, "-m", "datacomp", "--help"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and "filter-centroids" in r.stdout


def test_no_progress_turns_the_bars_off(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    src = _uid_text(tmp_path)
    parser = dict(COMMANDS)
    assert all(any(a.dest == "no_progress" for a in parser[(c,)]._actions)
               for c in ("download", "filter", "filter-signals", "filter-centroids", "reshard", "train", "evaluate",
                         "embed", "dedup", "demo"))
    rc, _, _ = _run(capsys, "subset", "from-text", src, "-o", tmp_path / "s.npy")
    assert rc == 0 and "TQDM_DISABLE" not in os.environ
    rc = main(["filter-signals", "--list", "--no-progress"])
    assert rc == 0 and os.environ.get("TQDM_DISABLE") == "1"
    from datacomp.engine.base import _progress

    bar = _progress(10, 0, "x", "it", True)  # a step that asks for its bar still gets none
    assert bar.disable is True
    bar.close()
    os.environ.pop("TQDM_DISABLE", None)
    bar = _progress(10, 0, "x", "it", True)
    assert bar.disable is False
    bar.close()
    os.environ.pop("TQDM_DISABLE", None)


def test_docs_table_is_generated_from_the_parser():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_table.py"), "--check"], capture_output=True,
                       text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    doc = (ROOT / "docs" / "cli.md").read_text()
    for path, p in COMMANDS:
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions):
            assert f"| `{' '.join(path)}` |" in doc, path


def test_subset_written_by_the_cli_is_the_sorted_array(capsys, tmp_path):
    """--config and -o reach the real writer: the file holds exactly the sorted uids, duplicates kept."""
    from datacomp import uids as U

    src = _uid_text(tmp_path)
    rc, _, _ = _run(capsys, "subset", "from-text", src, "-o", tmp_path / "s.npy")
    arr = np.load(tmp_path / "s.npy")
    assert rc == 0 and arr.dtype == U.UID_DTYPE and list(U.uids_to_hex(arr)) == sorted(UIDS)


def test_demo_progress_shows_an_eta():
    """The demo's one progress bar shows elapsed time and an ETA estimated over the whole run."""
    import time

    from rich.progress import TimeRemainingColumn

    from datacomp.demo import _Progress

    p = _Progress(4, True)
    assert any(isinstance(c, TimeRemainingColumn) for c in p._p.columns)
    with p:
        p.advance()
        time.sleep(0.2)
        p.advance()
        task = p._p.tasks[0]
        assert task.time_remaining is not None and 0 < task.time_remaining < 60
        rendered = "".join(str(c.render(task)) for c in p._p.columns)
    assert "ETA" in rendered


def test_config_lists_switches_and_the_command_line_winning(tmp_path):
    cfg = tmp_path / "download.yaml"
    cfg.write_text(f"output: {tmp_path}\nworkers: 32\nthread-count: 128\nskip_bbox_blurring: true\n"
                   "allow-network: [10.0.0.0/8, 192.168.0.0/16]\nresize-mode: center_crop\n")
    a = parse(build_parser(), ["download", "--config", str(cfg)])
    assert (a.data_dir, a.workers, a.thread_count, a.skip_bbox_blurring, a.resize_mode) == (
        str(tmp_path), 32, 128, True, "center_crop")
    assert a.allow_network == ["10.0.0.0/8", "192.168.0.0/16"] and a.image_size == 512  # untouched default
    a = parse(build_parser(), ["download", "--config", str(cfg), "-j", "2", "--allow-network", "127.0.0.0/8",
                               "--resize-mode", "border"])
    assert (a.workers, a.allow_network, a.resize_mode, a.thread_count) == (2, ["127.0.0.0/8"], "border", 128)
    # a flag required on the command line may come from the file; the old filter spelling reads it too
    cfg2 = tmp_path / "centroids.toml"
    cfg2.write_text('metadata_dir = "m"\nsave_path = "c.npy"\nnum_clusters = 9\n')
    a = parse(build_parser(), ["filter", "build-centroids", "--config", str(cfg2), "--seed", "4"])
    assert (a.command, a.metadata_dir, a.output, a.num_clusters, a.seed) == ("filter-centroids", "m", Path("c.npy"),
                                                                              9, 4)
