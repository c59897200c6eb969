"""Files written so that a crash never leaves half of one: a temporary sibling, then a rename.

Used by every layer (data split, run records, checkpoints, reports, merged models), so it lives
below them all.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import TunewiseError


def cache_dir() -> Path:
    """tunewise's user cache (converted models, base models' probe answers): $TUNEWISE_CACHE or ~/.cache/tunewise."""
    return Path(os.environ.get("TUNEWISE_CACHE", Path.home() / ".cache" / "tunewise"))


def usual_mode(path: str | Path) -> None:
    """Give a temporary file or directory the mode a plain open()/mkdir() would have (0666/0777 less
    the umask). mkstemp/mkdtemp make them 0600/0700, and the mode follows them through the rename:
    a merged model or GGUF only its owner can read breaks a server running as another user (ollama)."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask can only read it
    by setting it, and an interrupt between the two calls would leave it at 0)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str, private: bool = False) -> None:
    """`private`: keep it readable by its owner only (0600), as for a review's answer key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    if not private:
        usual_mode(tmp)
    os.replace(tmp, path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(path: str | Path) -> str:
    """A file's sha256, or for a directory (parquet files, a datasets save_to_disk) the sha256 of
    each file's relative name and sha256, in name order: equal exactly when the files are."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def atomic_dir(target: Path, write) -> None:
    """Call write(tmp_dir), then rename tmp_dir to target (replacing an older target)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    usual_mode(tmp)
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as e:
        raise TunewiseError(f"cannot write {target}: {e.strerror or e}; earlier checkpoints are kept") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def hold_lock(path: Path, what: str):
    """An exclusive lock on `path` for as long as this process lives (POSIX record locks are
    per process and released by the OS on exit or kill -9); refused when another process holds it.
    Returns the open file, which must stay referenced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise TunewiseError(f"{what} is in use by another process (pid {holder}): wait for it to finish, or use "
                            "another output_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
