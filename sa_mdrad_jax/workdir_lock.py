"""One writer per workdir: a lock file that names its holder, with stale-lock takeover.

Every command that writes into a workdir (train, distill, the quickstart's runs, a grid's runs)
holds `<workdir>/.lock` while it runs. The file is created atomically (O_CREAT | O_EXCL; on a
`gs://` workdir check-write-read-back, see `paths.create_exclusive`) and holds JSON: pid, host, start time and command line of the holder. A second writer is refused with an
error naming that process; nothing is written by the refused run.

Staleness. A lock whose holder is gone is taken over:
  * same host: the holder's pid no longer exists (`kill(pid, 0)`), at once;
  * another host (a shared filesystem): its pid cannot be checked from here, so the holder
    refreshes the file's mtime every HEARTBEAT_S seconds while it runs (a daemon thread), and a
    lock whose mtime is older than STALE_AFTER_S is taken to be abandoned.
Multi-host runs: only process 0 takes the lock (the other processes of the same run write
nothing but their own checkpoint shards, which Orbax coordinates). The lock is re-entrant within
a process: a grid runner that holds a run's workdir can hand it to the training loop.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

from sa_mdrad_jax import paths

LOCK_FILE = ".lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0

_held: dict[str, list] = {}   # abspath -> [depth, stop event]
_guard = threading.Lock()


class WorkdirLockedError(RuntimeError):
    """Another live process holds the workdir; nothing was written."""


def lock_path(workdir: str) -> str:
    return paths.join(paths.absolute(workdir), LOCK_FILE)


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": " ".join(paths.name(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}


def _read(path: str) -> dict | None:
    """The holder recorded in `path` ({} if unreadable, e.g. half-written), None if no file."""
    try:
        text = paths.read_text(path)
        mtime = paths.mtime(path)
    except FileNotFoundError:
        return None
    if text.strip().isdigit():   # an older plain-pid lock (same host)
        holder = {"pid": int(text.strip())}
    else:
        try:
            holder = json.loads(text)
            holder = holder if isinstance(holder, dict) else {}
        except ValueError:       # a file caught between create and write
            holder = {}
    return {**holder, "mtime": mtime, "raw": text}


def _alive(holder: dict) -> bool:
    """Whether the holder may still be running (see the module docstring for the rules)."""
    host = holder.get("host", socket.gethostname())
    if host != socket.gethostname():
        return time.time() - holder["mtime"] < STALE_AFTER_S
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        # Unreadable content: a writer may be between create and write; trust a fresh file only.
        return time.time() - holder["mtime"] < HEARTBEAT_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by another user
        return True
    return True


def describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    cmd = f" ({holder['command']})" if holder.get("command") else ""
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}{cmd}"


def _heartbeat(path: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            paths.touch(path)
        except OSError:
            return


def try_acquire(workdir: str) -> dict | None:
    """Takes the lock of `workdir` (creating the directory); None on success, else its live holder."""
    path = lock_path(workdir)
    with _guard:
        if path in _held:
            mine = _read(path) or {}
            if mine.get("pid") == os.getpid() and mine.get("host") == socket.gethostname():
                _held[path][0] += 1
                return None
            _held.pop(path)[1].set()   # replaced under us (judged stale elsewhere): compete afresh
        for _ in range(3):
            if not paths.create_exclusive(path, json.dumps(_me())):
                holder = _read(path)
                if holder is None:
                    continue                      # released meanwhile: try again
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    holder = None                 # ours from before (e.g. a re-used pid): take it back
                elif _alive(holder):
                    return holder
                _take_over(path, holder)
                continue
            stop = threading.Event()
            threading.Thread(target=_heartbeat, args=(path, stop), daemon=True,
                             name="workdir-lock-heartbeat").start()
            _held[path] = [1, stop]
            return None
        return _read(path) or {}


def _take_over(path: str, holder: dict | None) -> None:
    """Removes a stale lock, unless another process replaced it since we read it."""
    aside = f"{path}.stale.{os.getpid()}"
    try:
        paths.rename(path, aside)
    except FileNotFoundError:
        return
    text = paths.read_text(aside)
    if holder is not None and text != holder["raw"]:
        paths.create_exclusive(path, text)   # not the file we judged: put it back (unless yet another appeared)
    paths.remove(aside)


def acquire(workdir: str) -> None:
    """Takes the lock or raises WorkdirLockedError naming the process that holds it."""
    holder = try_acquire(workdir)
    if holder is not None:
        raise WorkdirLockedError(
            f"Workdir {paths.absolute(workdir)} is in use by {describe(holder)}. Wait for it to finish "
            "or use another --workdir. A lock whose process has died is taken over automatically "
            f"(another host's once it is {STALE_AFTER_S:.0f} s old); if you are sure nothing runs there, "
            f"delete {lock_path(workdir)}. Nothing was written.")


def release(workdir: str) -> None:
    path = lock_path(workdir)
    with _guard:
        entry = _held.get(path)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] > 0:
            return
        entry[1].set()
        del _held[path]
        mine = _read(path) or {}
        if mine.get("pid") == os.getpid() and mine.get("host") == socket.gethostname():
            try:   # (never another process's lock, should ours have been judged stale and taken over)
                paths.remove(path)
            except FileNotFoundError:
                pass


class hold:
    """`with hold(workdir, enabled=jax.process_index() == 0):` — acquire on entry, release on exit.

    `broadcast(refused: bool) -> bool` (multi-process runs: process 0's value to every process)
    makes every process of the run agree: when process 0 is refused, all of them raise, instead of
    the others waiting at their first collective for a process that has stopped.
    """

    def __init__(self, workdir: str, enabled: bool = True, broadcast=None):
        self.workdir, self.enabled, self.broadcast = workdir, enabled, broadcast

    def __enter__(self):
        error = None
        if self.enabled:
            try:
                acquire(self.workdir)
            except WorkdirLockedError as e:
                error = e
        if self.broadcast is not None and bool(self.broadcast(error is not None)) and error is None:
            if self.enabled:
                release(self.workdir)
            raise WorkdirLockedError(f"Workdir {paths.absolute(self.workdir)} is in use: process 0 of this run "
                                     "was refused its lock (its error names the holder). Nothing was written.")
        if error is not None:
            raise error
        return self

    def __exit__(self, *exc):
        if self.enabled:
            release(self.workdir)
