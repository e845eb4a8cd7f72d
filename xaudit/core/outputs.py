"""The run directory: atomic writes, per-subject records, resume and locking.

Every file is written to a temporary name in its own folder, fsynced and renamed into place
(then the folder is fsynced), so a killed run or a power loss never leaves a half-written
artifact under its real name. Per-subject records (``subjects/*.npz``)
are written last for each subject, after its attribution volumes: a record's presence
means the subject is complete, which is what ``--resume`` and ``merge`` rely on.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import io
import json
import math
import os
import re
import socket
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from xaudit.core.jsonable import to_jsonable
from xaudit.errors import OutputError



def _file_mode() -> int:
    """0o666 minus the process umask: what `open()` would have given (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# read once at import: os.umask can only be read by setting it, which is not thread-safe
FILE_MODE = _file_mode()
# who writes a temporary file (host and process), so a later run can tell a dead writer's
# leftovers from a live writer's work in progress
HOST = socket.gethostname().replace(".", "_")
WRITER = f"{HOST}-{os.getpid()}"
TEMP_PATTERN = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp")


def remove_orphaned_temp_files(root: Path) -> int:
    """Delete temporary files left by writers that died (``kill -9``), on this host only.

    A file is removed when its writer ran on this host and that process no longer exists;
    files of live writers, and of writers on other hosts (a shared file system), are kept.

    Returns:
        How many files were removed.
    """
    removed = 0
    for candidate in Path(root).rglob(".*.tmp*"):
        match = TEMP_PATTERN.match(candidate.name)
        if match is None or match["host"] != HOST:
            continue
        try:
            written = candidate.lstat().st_mtime
        except OSError:
            continue
        if _writer_alive(int(match["pid"]), written):
            continue
        candidate.unlink(missing_ok=True)
        removed += 1
    return removed


def _writer_alive(pid: int, written: float) -> bool:
    """The writer's pid runs and is the writer: a process started after the file was last
    written only reuses the pid (in a container, a resumed run often gets the killed one's)."""
    if not _alive(pid):
        return False
    started = _process_start(pid)
    return started is None or started <= written + 2.0


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds, Linux ``/proc``), else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/stat", encoding="ascii", errors="replace") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place on success.

    The temporary name keeps the file's suffixes (e.g. ``.nii.gz``) so writers that
    choose a format by extension behave. Disk-full and permission errors become an
    `OutputError` naming the file; the temporary file is removed.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".nii.gz") else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{WRITER}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _output_error(path, exc) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # shared run directories: group/others read as the umask allows
        _fsync(tmp)  # the data on disk before the name points at it (power loss)
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # and the rename itself
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _output_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    """fsync a written file: a disk error (EIO, a full NFS quota) is raised, here, not lost."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """fsync a directory (the rename); best effort, as some file systems cannot."""
    try:
        _fsync(path)
    except OSError:
        pass


def _output_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"{path}: no space left on the device; free space or choose another output (-o)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"{path}: permission denied; choose a writable output directory (-o)")
    return OutputError(f"{path}: cannot write ({exc.strerror or exc})")


def write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, obj: Any) -> Path:
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path | str, header: list[str], rows: list[list[Any]]) -> Path:
    """A CSV whose text cells cannot run as spreadsheet formulas (see `spreadsheet_safe`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([spreadsheet_safe(h) for h in header])
    writer.writerows([spreadsheet_safe(v) for v in row] for row in rows)
    return write_text(path, buffer.getvalue())


# a cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (OWASP)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _armed(text: str) -> bool:
    if not text.startswith(_FORMULA_START):
        return False
    try:
        float(text)
    except ValueError:
        return True
    return False  # a plain number (-1.5, +3) stays a number


def spreadsheet_safe(value: Any) -> Any:
    """OWASP CSV-injection defence: a text cell that would start a formula gets a leading ``'``.

    Numbers (and text that is a plain number, e.g. ``-0.5``) are unchanged. Text that already
    starts with quotes before a formula character gets one more, so `unescape_cell` gives
    back exactly the value written; JSON outputs keep values as they are.
    """
    if isinstance(value, str) and _armed(value.lstrip("'")):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """The value `spreadsheet_safe` was given, from a cell xaudit wrote."""
    if isinstance(text, str) and text.startswith("'") and _armed(text.lstrip("'")):
        return text[1:]
    return text


def save_record(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A per-subject record (npz), written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


def load_record(path: Path) -> dict[str, np.ndarray]:
    """A record written by `save_record`: ``np.load(path, allow_pickle=False)``'s arrays, read faster.

    ``np.load`` parses every member's header with ``ast.literal_eval``; a record has some 40
    members whose headers repeat across subjects, so each distinct header is parsed once
    (`_npy_header`). This halves the time to read a 10,000-subject run's records.
    """
    with zipfile.ZipFile(path) as archive:
        return {name[:-4] if name.endswith(".npy") else name: _npy(archive.read(name)) for name in archive.namelist()}


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, Fortran order, data offset) of one ``.npy`` member's header bytes."""
    fh = io.BytesIO(header)
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    return dtype, shape, fortran, fh.tell()


def _npy(raw: bytes) -> np.ndarray:
    if raw[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy member: the record is not an xaudit record (npz)")
    end = 10 + int.from_bytes(raw[8:10], "little") if raw[6] == 1 else 12 + int.from_bytes(raw[8:12], "little")
    dtype, shape, fortran, offset = _npy_header(raw[:end])
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    flat = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=offset).copy()
    return flat.reshape(shape[::-1]).transpose() if fortran else flat.reshape(shape)


#: written first into every run directory: what marks a folder as xaudit's to write into,
#: and the ledger of files the run owns beyond its fixed names (e.g. the report's figures)
RUN_MARKER = ".xaudit-run.json"


def _xaudit_named(name: str) -> bool:
    """A lock or temporary file of a run just starting in the same folder (a parallel shard)."""
    return name == ".lock" or name.startswith(".lock-") or TEMP_PATTERN.match(name) is not None


def check_output_folder(root: Path, option: str = "-o") -> None:
    """Refuse an output folder that is a file, or has a file where a folder on its way should be.

    Raises:
        OutputError: naming the file (not the first artifact that could not be written under it).
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root} is a file, not a folder: the output ({option}) is a directory xaudit "
                          "creates; name a folder instead")
    for parent in root.parents:  # a file where a folder on the way should be
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{root}: {parent} is a file, not a folder; name an output directory elsewhere")


class RunDirectory:
    """Paths of a run's output contract (see the README's "Output layout").

    xaudit writes only into a new or empty folder, or one that holds ``.xaudit-run.json``
    (or, from before the marker, ``config.resolved.yaml``); clean-up removes only files the
    run recorded in that marker as its own (`own`, `owned`).
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def subjects_dir(self) -> Path:
        return self.root / "subjects"

    def record_path(self, safe_id: str) -> Path:
        return self.subjects_dir / f"{safe_id}.npz"

    def attribution_path(self, method: str, safe_id: str) -> Path:
        return self.root / "attributions" / method / f"{safe_id}.nii.gz"

    def completed(self) -> set[str]:
        """safe ids whose per-subject record exists (finished subjects)."""
        if not self.subjects_dir.is_dir():
            return set()
        return {p.name[: -len(".npz")] for p in self.subjects_dir.glob("*.npz") if not p.name.startswith(".")}

    def is_run(self) -> bool:
        """Whether the folder is an xaudit run (its marker, or a run from before the marker)."""
        return (self.root / RUN_MARKER).is_file() or (self.root / "config.resolved.yaml").is_file()

    def claim(self, allow_foreign: bool = False) -> None:
        """Create the folder and its marker; refuse a non-empty folder that is not a run.

        Args:
            allow_foreign: accept a non-empty folder anyway (merge into a folder that holds
                the shards it merges, as `xaudit submit` lays them out).

        Raises:
            OutputError: the folder holds files xaudit did not write, or cannot be written.
        """
        check_output_folder(self.root, "-o, or `output:`")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _output_error(self.root, exc) from None
        if not os.access(self.root, os.W_OK):
            raise OutputError(f"{self.root}: permission denied; choose a writable output directory (-o)")
        if self.is_run():
            if not (self.root / RUN_MARKER).is_file():
                self._write_marker()
            return
        if not allow_foreign and any(not _xaudit_named(p.name) for p in self.root.iterdir()):
            raise OutputError(
                f"{self.root} is not empty and is not an xaudit run (no {RUN_MARKER}); xaudit writes only into a"
                " new or empty folder or its own run: choose another output directory (-o)"
            )
        self._write_marker()

    def _write_marker(self) -> None:
        """Create the marker unless another writer (a parallel shard) just did."""
        marker = self.root / RUN_MARKER
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            return
        except OSError as exc:
            raise _output_error(marker, exc) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"xaudit_run": 1, "created_by": WRITER, "owned": {}}, fh)
            fh.write("\n")

    def owned(self, kind: str) -> set[str]:
        """Names (relative to the run) of files of ``kind`` the run recorded as its own."""
        try:
            data = json.loads((self.root / RUN_MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        names = (data.get("owned") or {}).get(kind) if isinstance(data, dict) else None
        return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()

    def own(self, kind: str, names: set[str]) -> None:
        """Record ``names`` as the run's files of ``kind`` (replacing the previous record)."""
        marker = self.root / RUN_MARKER
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {"xaudit_run": 1}
        data = data if isinstance(data, dict) else {"xaudit_run": 1}
        data.setdefault("owned", {})[kind] = sorted(names)
        write_json(marker, data)

    def remove_owned_except(self, kind: str, keep: set[str]) -> None:
        """Delete the files of ``kind`` the run recorded and no longer writes; record ``keep``."""
        stale = self.owned(kind) - keep
        self.own(kind, keep)
        for name in stale:
            path = self.root / name
            if ".." not in Path(name).parts and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)

    def prepare(self, resume: bool) -> None:
        """Create (or claim) the directory; refuse to mix a fresh run into an existing one."""
        self.claim()
        if not resume and self.completed():
            raise OutputError(
                f"{self.root} already holds a run ({len(self.completed())} finished subjects);"
                " pass --resume to continue it, or choose another output (-o)"
            )

    def lock(self, shard: str = "") -> FileLock:
        """An exclusive lock for this run (or shard) held while it writes."""
        name = f".lock{('-' + shard) if shard else ''}"
        lock = FileLock(str(self.root / name), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise OutputError(
                f"{self.root} is in use by another xaudit run ({name}); wait for it to finish or choose another output (-o)"
            ) from None
        except OSError as exc:
            raise _output_error(self.root / name, exc) from None
        return lock
