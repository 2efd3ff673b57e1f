"""The pip command that adds an extra, for how hangguard itself was installed.

``pip install 'hangguard[cli]'`` is the fix only for an install from an index: from a
checkout (``pip install -e .``) it would fetch a second, released copy over the working
tree. pip records a direct install in the distribution's ``direct_url.json`` (PEP 610),
read here through :mod:`importlib.metadata`.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["pip_install"]

_DIST = "hangguard"


@functools.cache
def _local_source() -> tuple[Path, bool] | None:
    """The directory hangguard was installed from and whether editably, else ``None``."""
    try:
        return local_source(metadata.distribution(_DIST))
    except metadata.PackageNotFoundError:
        return None


def local_source(dist: metadata.Distribution) -> tuple[Path, bool] | None:
    """The directory ``dist`` was installed from and whether editably, else ``None``."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None  # installed from an index
    try:
        info = json.loads(text)
    except ValueError:
        return None  # unreadable: the index form is still a command that works
    url, dir_info = info.get("url"), info.get("dir_info")
    if not isinstance(url, str) or not isinstance(dir_info, dict):
        return None  # an archive or a VCS URL: no local tree to point at
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return Path(unquote(parts.path)), bool(dir_info.get("editable"))


def pip_install(extra: str) -> str:
    """The command that installs hangguard's ``extra`` the way hangguard was installed.

    ``pip install -e '.[cli]'`` for an editable install from the current directory (the
    checkout's path instead of ``.`` from elsewhere), ``pip install 'hangguard[cli]'``
    for one from an index::

        print(f"the command needs the cli extra: {pip_install('cli')}")
    """
    source = _local_source()
    if source is None:
        return f"pip install {shlex.quote(f'{_DIST}[{extra}]')}"
    path, editable = source
    try:
        here = Path.cwd().resolve() == path.resolve()
    except OSError:
        here = False
    where = "." if here else os.fspath(path)
    flag = "-e " if editable else ""
    return f"pip install {flag}{shlex.quote(f'{where}[{extra}]')}"
