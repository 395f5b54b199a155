"""Atomic file writes: a temporary file in the target folder, renamed when complete.

The temporary name is ``tmp-<host>-<pid>-<random><suffix>``: a write that is killed
(SIGKILL, power loss) cannot clean up after itself, so the next atomic write into
the same folder removes the partial files of processes of this host that no longer
run. Finished files get the mode a plain ``open(path, "w")`` would give them: the
existing file's mode, or ``0o666`` less the umask for a new file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import stat
import tempfile
from pathlib import Path

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_PARTIAL = re.compile(r"^tmp-([0-9a-f]{6})-(\d+)-.*\.partial")


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide and racy)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:  # EPERM: it runs, as another user
        return exc.errno == errno.EPERM
    return True


def remove_stale_partials(folder) -> list[Path]:
    """Remove ``tmp-*.partial*`` files left in ``folder`` by dead processes of this host."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _PARTIAL.match(name)
        if match is None or match[1] != _HOST or _alive(int(match[2])):
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, name))
            removed.append(Path(folder) / name)
    return removed


def _new_temp(path: Path, suffix: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f"tmp-{_HOST}-{os.getpid()}-", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_paths(paths, suffixes=None):
    """Temporary paths beside each of ``paths``, renamed onto them when the block succeeds.

    The first path is the main output: it is renamed first, and the others (companion
    files) only after it is in place. On any error (and on KeyboardInterrupt or
    SystemExit) every temporary file still present is removed and no target changes,
    except that a failure renaming a companion leaves the main output written.
    """
    paths = [Path(p) for p in paths]
    suffixes = list(suffixes) if suffixes is not None else [".partial"] * len(paths)
    temps: list[str] = []
    try:
        for path, suffix in zip(paths, suffixes):
            temps.append(_new_temp(path, suffix))
        yield temps
        for path, tmp in zip(paths, temps):
            os.chmod(tmp, _final_mode(path))  # mkstemp makes 0600 files
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".partial"):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On any error the temporary file is removed, so a failed write never leaves
    a half-written file (or clobbers the old one).
    """
    with atomic_paths([path], [suffix]) as (tmp,):
        yield tmp
