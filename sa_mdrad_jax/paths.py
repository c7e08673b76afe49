"""Every file the project reads or writes goes through this module: local paths and object-store
URLs (`gs://bucket/run`, also `s3://`, ... wherever `etils.epath` has a backend) alike.

Workdirs, checkpoints (Orbax writes `gs://` itself, through TensorStore), config.json,
metrics.jsonl, TensorBoard events, evaluation and sanity reports, plots, grid markers and results,
the workdir lock, teacher workdirs, `train.init_from`, import/export files and `dataset.data_dir`
are all handled here, so a new scheme needs nothing but an epath backend.

Local paths take the `os` route (as before: atomic renames, O_EXCL, appends); URLs go through
`etils.epath` (for `gs://` without TensorFlow that is `gcsfs`: `pip install -e ".[gcs]"`). Where
an object store cannot do what a disk does, the remote route says what it does instead:
  * append: objects are immutable, so `append_text` rewrites the object with the new line added
    (metrics files are small: kilobytes per run);
  * atomic replace: writing an object is atomic already (readers see the old or the new one);
  * exclusive create (the workdir lock): check, write, read back — two launches within the same
    second on the same `gs://` workdir can both pass (GCS preconditions are not exposed by fsspec);
  * rename: copy each file, then delete the source (not atomic);
  * modification time: the object's update time, refreshed by rewriting it (`touch`).
"""
from __future__ import annotations

import io
import os
import shutil
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike]


def is_remote(path: PathLike) -> bool:
    """Whether `path` is a URL (`scheme://...`) rather than a local path."""
    return "://" in os.fspath(path)


def path(p: PathLike) -> epath.Path:
    return epath.Path(p)


def absolute(p: PathLike) -> str:
    """A local path made absolute (`~` expanded); a URL unchanged."""
    p = os.fspath(p)
    return p if is_remote(p) else os.path.abspath(os.path.expanduser(p))


def join(base: PathLike, *parts: str) -> str:
    base = os.fspath(base)
    if not is_remote(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])


def parent(p: PathLike) -> str:
    p = os.fspath(p)
    if not is_remote(p):
        return os.path.dirname(p)
    return str(epath.Path(p.rstrip("/")).parent)


def name(p: PathLike) -> str:
    return os.path.basename(os.fspath(p).rstrip("/"))


def exists(p: PathLike) -> bool:
    return os.path.exists(p) if not is_remote(p) else epath.Path(p).exists()


def isfile(p: PathLike) -> bool:
    if not is_remote(p):
        return os.path.isfile(p)
    q = epath.Path(p)
    return q.exists() and not q.is_dir()


def isdir(p: PathLike) -> bool:
    return os.path.isdir(p) if not is_remote(p) else epath.Path(p).is_dir()


def listdir(p: PathLike) -> list[str]:
    """Names in directory `p` (sorted); [] when it does not exist."""
    if not is_remote(p):
        return sorted(os.listdir(p)) if os.path.isdir(p) else []
    q = epath.Path(p)
    return sorted(c.name for c in q.iterdir()) if q.is_dir() else []


def glob(directory: PathLike, pattern: str) -> list[str]:
    """Paths in `directory` matching `pattern` (e.g. '*.json'), sorted."""
    q = epath.Path(directory)
    if not q.is_dir():
        return []
    return sorted(str(c) if is_remote(directory) else os.fspath(c) for c in q.glob(pattern))


def makedirs(p: PathLike) -> None:
    if is_remote(p):
        epath.Path(p).mkdir(parents=True, exist_ok=True)   # object stores: a no-op below the bucket
    else:
        os.makedirs(p, exist_ok=True)


def open_file(p: PathLike, mode: str = "r"):
    return open(p, mode) if not is_remote(p) else epath.Path(p).open(mode)


def read_text(p: PathLike) -> str:
    with open_file(p, "r") as f:
        return f.read()


def read_bytes(p: PathLike) -> bytes:
    with open_file(p, "rb") as f:
        return f.read()


def write_text(p: PathLike, text: str) -> None:
    """Writes `text` to `p` atomically: readers see the old content or the new, never a part."""
    _write(p, text.encode("utf-8"))


def write_bytes(p: PathLike, data: bytes) -> None:
    _write(p, data)


def _write(p: PathLike, data: bytes) -> None:
    p = os.fspath(p)
    makedirs(parent(p))
    if is_remote(p):
        with epath.Path(p).open("wb") as f:
            f.write(data)
        return
    tmp = f"{p}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def append_text(p: PathLike, text: str) -> None:
    """Appends `text` to `p` (created if missing); remote: rewrites the object with it appended."""
    if not is_remote(p):
        makedirs(parent(p))
        with open(p, "a") as f:
            f.write(text)
        return
    old = read_text(p) if exists(p) else ""
    write_text(p, old + text)


def remove(p: PathLike) -> None:
    """Deletes file `p`; FileNotFoundError when it is not there."""
    if not is_remote(p):
        os.remove(p)
    elif not exists(p):
        raise FileNotFoundError(p)
    else:
        epath.Path(p).unlink()


def rmtree(p: PathLike) -> None:
    if not is_remote(p):
        shutil.rmtree(p)
    else:
        epath.Path(p).rmtree()


def rename(src: PathLike, dst: PathLike) -> None:
    """Moves file or directory `src` to `dst` (the parent of `dst` is created).

    Local: `os.rename` (atomic; FileNotFoundError if `src` is gone). Remote: copy then delete."""
    makedirs(parent(dst))
    if not is_remote(src) and not is_remote(dst):
        os.rename(src, dst)
        return
    if not exists(src):
        raise FileNotFoundError(src)
    src, dst = os.fspath(src), os.fspath(dst)
    if not isdir(src):
        copy(src, dst)
        remove(src)
        return
    base = epath.Path(src)
    for f in base.rglob("*"):
        if not f.is_dir():
            copy(f, join(dst, str(f.relative_to(base))))
    rmtree(src)


def copy(src: PathLike, dst: PathLike) -> None:
    """Copies file `src` to `dst` (overwriting), across schemes too."""
    write_bytes(dst, read_bytes(src))


def mtime(p: PathLike) -> float:
    """Last modification time of `p` in seconds since the epoch (FileNotFoundError if missing)."""
    if not is_remote(p):
        return os.path.getmtime(p)
    if not exists(p):
        raise FileNotFoundError(p)
    return float(epath.Path(p).stat().mtime)


def signature(p: PathLike) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of file `p`: changes when the file is rewritten."""
    if not is_remote(p):
        st = os.stat(p)
        return st.st_size, st.st_mtime_ns
    st = epath.Path(p).stat()
    return int(st.length or 0), int(st.mtime * 1e9)


def touch(p: PathLike) -> None:
    """Refreshes the modification time of existing file `p` (remote: rewrites the object)."""
    if not is_remote(p):
        os.utime(p)
    else:
        write_bytes(p, read_bytes(p))


def create_exclusive(p: PathLike, text: str) -> bool:
    """Creates `p` holding `text` if it does not exist; False if it already did.

    Local: O_CREAT | O_EXCL (atomic). Remote: see the module docstring (check, write, read back)."""
    p = os.fspath(p)
    makedirs(parent(p))
    if not is_remote(p):
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    if exists(p):
        return False
    write_text(p, text)
    return read_text(p) == text


def save_figure(fig, p: PathLike, **kwargs) -> None:
    """`fig.savefig` into `p`, whatever its scheme (the format from the suffix)."""
    buffer = io.BytesIO()
    fmt = os.path.splitext(os.fspath(p))[1].lstrip(".") or "png"
    fig.savefig(buffer, format=fmt, **kwargs)
    write_bytes(p, buffer.getvalue())


class LocalMirror:
    """A local directory whose files are copied to `target` on `sync()` (for writers that can only
    write local files, e.g. TensorBoard event writers, when `target` is a URL).

    For a local `target` the directory is `target` itself and `sync` does nothing."""

    def __init__(self, target: PathLike):
        self.target = os.fspath(target)
        if is_remote(self.target):
            import tempfile
            self.directory = tempfile.mkdtemp(prefix="sa_mdrad_mirror_")
        else:
            os.makedirs(self.target, exist_ok=True)
            self.directory = self.target
        self._copied: dict[str, tuple[int, float]] = {}

    def sync(self) -> None:
        if self.directory == self.target:
            return
        for root, _, files in os.walk(self.directory):
            for f in files:
                local = os.path.join(root, f)
                st = os.stat(local)
                stamp = (st.st_size, st.st_mtime)
                if self._copied.get(local) != stamp:
                    rel = os.path.relpath(local, self.directory).replace(os.sep, "/")
                    copy(local, join(self.target, rel))
                    self._copied[local] = stamp

    def close(self) -> None:
        self.sync()
        if self.directory != self.target:
            shutil.rmtree(self.directory, ignore_errors=True)
