"""The CLI's one error path: every class of failure is one `error:` line and the right exit code.

Each case is a real trigger (a full tmpfs, a read-only mount, an unprivileged user, a file-descriptor
limit, a binary file, a missing module), run through the real `datacomp` command in a subprocess.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from datacomp import uids as U
from datacomp.errors import EXIT_ENVIRONMENT, EXIT_USER, describe

SRC = str(Path(__file__).resolve().parents[1] / "src")
NOBODY = 65534
PROGRESS = re.compile(r"\d+%\|")  # a tqdm bar (some steps draw one on a piped stderr too)


def run_cli(*args: str, preexec: Callable[[], None] | None = None, prelude: str = "", prefix: tuple[str, ...] = (),
            timeout: float = 120) -> subprocess.CompletedProcess:
    """``datacomp ARGS`` in a subprocess (progress bars off: stderr then holds only what the run reports)."""
    code = f"import sys\n{prelude}\nfrom datacomp.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONDONTWRITEBYTECODE="1",
               TQDM_DISABLE="1")
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, preexec_fn=preexec, cwd="/")


def assert_one_line(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """stderr is exactly one line starting with `error:` (a step's progress bar aside); the exit code is ``code``."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip() and not PROGRESS.search(ln)]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@contextlib.contextmanager
def tmpfs(size: str = "4m", opts: str = "") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` (world-writable, sticky), unmounted afterwards; skips if mounting is refused."""
    d = Path(tempfile.mkdtemp(prefix="dc_tmpfs_", dir="/tmp"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{',' + opts if opts else ''}", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode:
        d.rmdir()
        why = (r.stderr.strip() or "refused").splitlines()[0]
        pytest.skip(f"cannot mount a tmpfs with -o {opts or size} here: {why}")
    try:
        os.chmod(d, 0o1777)
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        d.rmdir()


def fill(d: Path, keep: int = 0) -> Path:
    """Fill the file system of ``d`` with a ballast file, leaving about ``keep`` bytes free."""
    ballast = d / "ballast"
    with open(ballast, "wb") as f, contextlib.suppress(OSError):  # truncated first: measure after
        st = os.statvfs(d)
        f.write(b"\0" * max(st.f_bavail * st.f_frsize - keep, 0))
    return ballast


def remount_ro(d: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)


# Root without the capabilities that bypass file permissions: an ordinary user's view of them.
NOCAPS = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner")


@pytest.fixture
def subset(tmp_path) -> Path:
    """A real subset file of 50,000 uids (800 kB)."""
    p = tmp_path / "s.npy"
    U.write_subset(p, U.hex_to_uids([f"{i:032x}" for i in range(1, 50_001)]))
    return p


def _nocaps() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop the permission-bypassing capabilities")


def test_user_error_is_one_line_exit_2(tmp_path):
    r = run_cli("subset", "merge", str(tmp_path / "a.npy"), "-o", str(tmp_path / "o.npy"))
    assert_one_line(r, EXIT_USER, "at least two input files")


def test_missing_input_file_is_one_line(tmp_path):
    r = run_cli("subset", "from-text", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o.npy"))
    assert_one_line(r, EXIT_USER, "nope.txt")
    assert not (tmp_path / "o.npy").exists()


def test_binary_file_is_one_line_decode_error(tmp_path):
    bad = tmp_path / "uids.txt"
    bad.write_bytes(bytes(range(256)) * 4)
    r = run_cli("subset", "from-text", str(bad), "-o", str(tmp_path / "o.npy"))
    assert_one_line(r, EXIT_USER)
    assert not (tmp_path / "o.npy").exists()


def test_verbose_still_gives_the_traceback(tmp_path):
    bad = tmp_path / "uids.txt"
    bad.write_bytes(bytes(range(256)) * 4)
    quiet = run_cli("subset", "from-text", str(bad), "-o", str(tmp_path / "o.npy"))
    r = run_cli("-v", "subset", "from-text", str(bad), "-o", str(tmp_path / "o.npy"))
    assert r.returncode == EXIT_USER
    assert "Traceback (most recent call last)" in r.stderr
    assert r.stderr.splitlines()[-1] == quiet.stderr.strip()  # the same one line, after the traceback


def test_disk_full_is_one_line_exit_1(subset):
    with tmpfs("1m") as d:
        out = d / "uids.txt"
        r = run_cli("subset", "to-text", str(subset), "-o", str(out))  # 1.65 MB of text into 1 MB
        assert_one_line(r, EXIT_ENVIRONMENT, str(out), "no space left", "free space")
        assert sorted(p.name for p in d.iterdir()) == []  # no partial file, final or temporary


def test_read_only_output_is_one_line_exit_1(subset):
    with tmpfs("4m") as d:
        remount_ro(d)
        r = run_cli("subset", "to-text", str(subset), "-o", str(d / "uids.txt"))
        assert_one_line(r, EXIT_ENVIRONMENT, str(d), "read-only", "writable")


def test_permission_denied_is_one_line_exit_1(subset):
    _nocaps()
    with tmpfs("4m") as d:
        out = d / "locked"
        out.mkdir()
        os.chmod(out, 0o555)
        r = run_cli("subset", "to-text", str(subset), "-o", str(out / "uids.txt"), prefix=NOCAPS)
        assert_one_line(r, EXIT_ENVIRONMENT, str(out), "permission denied", "permissions")


def test_operation_not_permitted_is_one_line_exit_1(tmp_path):
    """Replacing another user's file in their sticky directory is EPERM (the atomic rename is refused)."""
    _nocaps()
    with tmpfs("4m") as d:
        src = tmp_path / "uids.txt"
        src.write_text(f"{1:032x}\n")
        shared = d / "shared"
        shared.mkdir()
        os.chmod(shared, 0o1777)
        os.chown(shared, NOBODY, NOBODY)
        final = shared / "s.npy"
        final.write_bytes(b"another user's file")
        os.chown(final, NOBODY - 1, NOBODY - 1)
        r = run_cli("subset", "from-text", str(src), "-o", str(final), prefix=NOCAPS)
        assert_one_line(r, EXIT_ENVIRONMENT, str(final), "not permitted")
        assert final.read_bytes() == b"another user's file"


def test_quota_exceeded_is_one_line_exit_1(subset):
    """tmpfs enforces a per-user block quota (Linux >= 6.6 with CONFIG_TMPFS_QUOTA); root is not exempt."""
    with tmpfs("8m", "usrquota,usrquota_block_hardlimit=256k") as d:
        r = run_cli("subset", "to-text", str(subset), "-o", str(d / "uids.txt"))
        assert_one_line(r, EXIT_ENVIRONMENT, "quota")


def test_too_many_open_files_is_one_line_exit_1(tmp_path):
    """A descriptor limit the process can start under but that a step's parallel readers exceed."""
    files = []
    for i in range(40):
        p = tmp_path / f"u{i:02d}.npy"
        U.write_subset(p, U.hex_to_uids([f"{i + 1:032x}"]))
        files.append(str(p))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    prelude = ("import numpy, pyarrow, datacomp.uids, resource\n"
               "_held = []\n"
               "import datacomp.cli\n"
               "for _ in range(1000):\n"
               "    try:\n"
               "        _held.append(open('/dev/null'))\n"
               "    except OSError:\n"
               "        break\n"
               "_held.pop().close()\n")  # one descriptor left: the step's output file cannot be written
    r = run_cli("subset", "merge", *files, "-o", str(tmp_path / "o.npy"), preexec=limit, prelude=prelude)
    assert_one_line(r, EXIT_ENVIRONMENT, "too many open files", "ulimit")


def test_missing_optional_package_names_the_extra():
    """A real ImportError from a blocked module (None in sys.modules is how Python marks one absent)."""
    r = run_cli("subset", "from-parquet", "/nonexistent.parquet", "-o", "/tmp/x.npy",
                prelude="sys.modules['pyarrow.parquet'] = None")
    assert_one_line(r, EXIT_USER, "pyarrow", "pip install")
    code = ("import sys; sys.modules['ray'] = None\n"
            "from datacomp.errors import describe\n"
            "try:\n    import ray\nexcept ImportError as e:\n    print(describe(e)[0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=SRC)).stdout
    assert 'datacomp[ray]' in out and "'ray'" in out


def test_describe_classes_from_real_errors(tmp_path):
    """The mapping itself, on exceptions raised by the real libraries."""
    import json
    import tarfile
    import zipfile

    import pyarrow.parquet as pq
    from PIL import Image

    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x80garbage" * 10)
    raised = []
    for f in (lambda: json.loads(bad.read_text(errors="replace")), lambda: bad.read_text(),
              lambda: Image.open(bad), lambda: pq.read_table(bad), lambda: zipfile.ZipFile(bad),
              lambda: tarfile.open(bad)):  # noqa: SIM115
        try:
            f()
        except Exception as e:  # noqa: BLE001
            raised.append(e)
    assert len(raised) == 6
    for e in raised:
        got = describe(e)
        assert got is not None, repr(e)
        assert got[1] == EXIT_USER and "\n" not in got[0], got
    # an environment fault hidden behind a library's own exception still reads as the fault
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/x.pt")
        except OSError as e:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from e
    except RuntimeError as e:
        line, code = describe(e)
    assert code == EXIT_ENVIRONMENT and line.startswith("/data/x.pt: no space left on device")
    assert describe(ValueError("a bug")) is None  # a bug keeps its traceback
