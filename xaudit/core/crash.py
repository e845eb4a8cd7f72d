"""Crash files: the traceback of an unexpected error, kept where the user will look.

Like nipype's and fMRIPrep's ``crash-*`` files: the command line prints one line and
exits 3; the traceback, versions and command go to ``crash-<time>-<host>-<pid>.txt`` in
the run directory, or in the temp folder while there is no run directory (xaudit never
writes into a folder that is not its own run).
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

from xaudit._version import __version__
from xaudit.core.outputs import WRITER, RunDirectory


def write_crash_file(exc: BaseException, folder: Path | str | None) -> Path | None:
    """Write the traceback of ``exc``; returns the file, or None if it could not be written."""
    target = Path(folder) if folder is not None and RunDirectory(folder).is_run() else Path(tempfile.gettempdir())
    path = target / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{WRITER}.txt"
    text = (f"xaudit {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
            f"command: {' '.join(sys.argv)}\n\n" + "".join(traceback.format_exception(exc)))
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path
