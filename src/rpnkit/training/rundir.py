"""Run folders claimed exclusively: checks, lock and the states a folder can be in.

A run holds ``RUN/.lock`` (``fcntl.flock``, exclusive) from the moment it claims the folder
until it ends, so a second run into the same folder stops at once with a one-line message
that names the holder (pid, host and start time are written into the lock file). The
kernel releases the lock when the process dies, even on SIGKILL or OOM: a crashed run
never leaves a folder locked, and a leftover ``.lock`` file without a holder is ignored.
The lock file is removed when a run ends normally.

:func:`check_out_path` checks an output path without writing anything (not a file, not
under a file, in a writable folder, not in use, in a state the requested mode accepts),
so that bad ``--out`` values stop before any data or model is built. :class:`RunFolder`
then claims the folder and checks its state again under the lock.

States of a folder (:func:`inspect`):

``missing`` / ``empty``
    nothing there yet: a fresh run.
``stale``
    ``config.yaml`` (perhaps ``metrics.csv``, ``tensorboard``) and neither a checkpoint nor
    results: a run that died before its first checkpoint. A fresh run replaces it,
    ``--resume`` starts it again from scratch.
``unfinished``
    ``checkpoint.pt``: ``--resume`` continues it; ``--overwrite`` starts over.
``finished``
    results (``metrics.json``, ``model.pt`` ...) and no checkpoint: ``--overwrite`` replaces
    it; ``--resume`` with more epochs (``--set train.epochs=N``) continues it from
    ``train_state.pt``, the training state it ended with.
``foreign``
    other files and no ``config.yaml``: not a run folder, never touched.

Replacing a run (fresh run into a stale folder, ``--overwrite``) removes only the run's own
files (:data:`RUN_FILES`, ``tensorboard/``); other files in the folder are kept.

No link is followed: every file rpnkit opens for writing in a run folder is opened with
``O_NOFOLLOW`` (:func:`open_run_file`) and must be a regular file with no other hard link,
or is written whole to a temporary file and renamed over the old name (which replaces a
link, never the file it points to). A run folder rpnkit wrote never holds links, so a
symbolic link (or a non-regular file) in place of a run file that a resumed run keeps is
refused with one line before anything is written; a replaced run's files are unlinked.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError, short
from .checkpoint import fsync_dir

__all__ = ["RunFolderError", "RunFolderBusy", "FolderState", "inspect", "check_out_path",
           "RunFolder", "RUN_FILES", "LOCK_NAME", "TRAIN_STATE", "open_run_file",
           "check_run_files"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
PLOTS = ("learning_curves.png", "fit.png", "confusion_matrix.png")
# removal order of a replaced run: its checkpoint first, then its results, then the rest,
# so that a crash part-way leaves an unfinished/finished or a stale folder, never a mix
RUN_FILES = ("checkpoint.pt", "train_state.pt", "metrics.json", "model.pt", "best.pt", *PLOTS,
             "metrics.csv", "config.yaml")
TRAIN_STATE = "train_state.pt"  # a finished run's last training state (continued with --resume)
RUN_DIRS = ("tensorboard",)
RESULTS = {"metrics.json", "model.pt", "best.pt", *PLOTS}
LOCK_WAIT_S = 2.0  # a claim retries this long (a concurrent check may hold the lock briefly)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class RunFolderError(ConfigurationError):
    """The output folder cannot be used for this run (bad path, wrong state)."""


class RunFolderBusy(RunFolderError):
    """Another process holds the output folder's lock."""


def _is_temp(name: str) -> bool:
    """A temporary file of rpnkit's atomic writers (left behind by a killed process) or of
    :func:`check_out_path`'s write probe."""
    if not name.startswith("."):
        return False
    if name.startswith(".rpnkit-probe-"):
        return True
    if name.endswith(".tmp"):
        return any(name.startswith(f".{f}.") for f in RUN_FILES)
    if name.endswith(".png"):
        return any(name.startswith(f".{Path(f).stem}.") for f in PLOTS)
    return False


def _not_regular(path: Path, mode: int) -> RunFolderError:
    if stat.S_ISLNK(mode):
        what = "a symbolic link"
    elif stat.S_ISDIR(mode):
        what = "a folder"
    else:
        what = "not a regular file (a pipe, socket or device)"
    return RunFolderError(f"{str(path)!r} is {what}; a run folder's files are regular files "
                          "that rpnkit wrote, and rpnkit does not follow links there: remove it")


def open_run_file(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags)`` for a file inside a run folder that will be written: never
    follows a symbolic link (``O_NOFOLLOW``), never blocks on a FIFO, and accepts only a
    regular file with no other hard link (writing through one would change the file it
    shares). Raises :class:`RunFolderError` naming the file; other errors as ``OSError``."""
    path = Path(path)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EISDIR):
            with contextlib.suppress(OSError):
                raise _not_regular(path, os.lstat(path).st_mode) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        if st.st_nlink > 1:
            raise RunFolderError(f"{str(path)!r} has {st.st_nlink - 1} other hard link(s); "
                                 "rpnkit does not write through them: remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_run_files(out: Path, names=(LOCK_NAME, *RUN_FILES), dirs=RUN_DIRS) -> None:
    """Raise :class:`RunFolderError` when one of ``names`` in ``out`` exists and is not a
    regular file (a symbolic link above all), or one of ``dirs`` is not a real folder."""
    for name in (*names, *dirs):
        p = Path(out) / name
        try:
            mode = os.lstat(p).st_mode
        except FileNotFoundError:
            continue
        ok = stat.S_ISDIR(mode) if name in dirs else stat.S_ISREG(mode)
        if not ok:
            raise _not_regular(p, mode)


@dataclass
class FolderState:
    kind: str  # missing | empty | stale | unfinished | finished | foreign
    names: set[str] = field(default_factory=set)


def inspect(out: Path) -> FolderState:
    """The state of ``out`` (see the module doc); the lock and temporary files are ignored."""
    out = Path(out)
    if not out.is_dir():
        return FolderState("missing")
    all_names = {p.name for p in out.iterdir()}
    names = {n for n in all_names if n != LOCK_NAME and not _is_temp(n)}
    if not names:
        # a lock file alone: a run died before writing its config
        return FolderState("stale" if LOCK_NAME in all_names else "empty", names)
    if "checkpoint.pt" in names:
        return FolderState("unfinished", names)
    if "config.yaml" not in names:
        return FolderState("foreign", names)
    if names & RESULTS:
        return FolderState("finished", names)
    return FolderState("stale", names)


def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = " ".join(lock.read_text(encoding="utf-8").split())
        if text:
            return f" ({text})"
    return ""


def _busy(out: Path) -> RunFolderBusy:
    return RunFolderBusy(
        f"output folder {str(out)!r} is in use by another rpnkit run{_holder(out / LOCK_NAME)}; "
        "wait for it to end or choose another --out"
    )


def _probe_busy(out: Path) -> None:
    """Raise :class:`RunFolderBusy` when a live process holds ``out``'s lock (no writes)."""
    lock = out / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | _NOFOLLOW | _NONBLOCK)
    except OSError:
        return  # no lock file (or not one to lock: check_run_files refuses it)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(out) from None
    except OSError:
        return  # no flock on this file system: RunFolder decides
    finally:
        os.close(fd)


def _writable_folder(path: Path) -> bool:
    if not os.access(path, os.W_OK | os.X_OK):
        return False
    try:  # the authoritative test (read-only mounts, ACLs, root on special file systems)
        fd, probe = tempfile.mkstemp(prefix=".rpnkit-probe-", dir=path)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def _mode_error(out: Path, state: FolderState, resume: bool, overwrite: bool,
                extend: bool = False) -> str | None:
    """Why ``state`` does not suit the mode (None: it does). ``extend``: the resumed config
    asks for another number of epochs (a finished run may then be continued)."""
    where = repr(str(out))
    if state.kind == "foreign":
        return (f"output folder {where} already exists and is not empty, and it is not an "
                "rpnkit run folder (no config.yaml); choose another --out")
    if resume:
        if state.kind == "missing":
            return f"--resume: {where} does not exist; there is no run to resume"
        if state.kind == "empty":
            return f"--resume: {where} is empty; there is no run to resume"
        if state.kind == "finished" and not extend:
            return (f"{where} holds a finished run; nothing to resume: continue it with --set "
                    "train.epochs=N (more epochs than it ran), or add --overwrite instead of "
                    "--resume to train it again")
        return None
    if overwrite:
        return None
    if state.kind == "unfinished":
        return (f"output folder {where} already exists and holds an unfinished run "
                "(checkpoint.pt): add --resume to continue it or --overwrite to start over")
    if state.kind == "finished":
        return (f"output folder {where} already exists and holds a finished run: choose "
                "another --out or add --overwrite to replace it")
    return None


def check_out_path(out: Path, resume: bool = False, overwrite: bool = False,
                   extend: bool = False) -> FolderState:
    """Check output folder ``out`` for a run without writing anything.

    Raises :class:`RunFolderError` when ``out`` is a file, lies under a file, would be created
    in a folder that is not writable, is not writable itself, is in use by another run, or
    is in a state that the mode (fresh, ``resume``, ``overwrite``) does not accept;
    ``extend`` (resume with another ``train.epochs``) accepts a finished run too.
    """
    out = Path(out)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other")
    if "\x00" in str(out):
        raise RunFolderError(f"--out {short(str(out), 120)} contains a NUL character")
    where = short(str(out), 120)
    try:
        if out.is_symlink() and not out.exists():
            raise RunFolderError(f"--out {where} is a broken symbolic link")
        if out.exists() and not out.is_dir():
            raise RunFolderError(f"--out {where} is a file, not a folder")
        anc = out
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise RunFolderError(f"--out {where} cannot be created: {str(anc)!r} is a file")
        if not _writable_folder(anc):
            what = "output folder" if anc == out else "folder"
            raise RunFolderError(f"--out {where}: {what} {str(anc)!r} is not writable")
        if out.is_dir():
            check_run_files(out, (LOCK_NAME,), ())
            _probe_busy(out)
        state = inspect(out)
    except PermissionError as exc:
        raise RunFolderError(f"--out {where} cannot be accessed: {exc.strerror}") from None
    except OSError as exc:  # e.g. a name longer than the file system allows
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise RunFolderError(f"--out {where} cannot be used: {exc.strerror}") from None
    problem = _mode_error(out, state, resume, overwrite, extend)
    if problem:
        raise RunFolderError(problem)
    if resume and state.kind in ("unfinished", "finished"):  # kept, read and appended to
        check_run_files(out)
    return state


class RunFolder:
    """An output folder claimed by this process (see the module doc).

    ``RunFolder(out).claim(resume, overwrite)`` creates the folder, takes the lock (raising
    :class:`RunFolderBusy` when another process holds it), checks the folder's state under
    the lock and removes temporary files left by killed runs; :meth:`clear` then removes the
    files of a run that is replaced, and :meth:`release` gives the lock back.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.lock_path = self.out / LOCK_NAME
        self.fd: int | None = None
        self.created = False
        self.state = FolderState("missing")

    # -- lock
    def _lock(self) -> int:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fd = open_run_file(self.lock_path, os.O_RDWR | os.O_CREAT)
            except FileNotFoundError:  # the folder was removed meanwhile: create it again
                self.out.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise _busy(self.out) from None
                time.sleep(0.05)
                continue
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    logger.warning("%s: file locks are not supported here (%s); the folder is "
                                   "not protected against a second run", self.out, exc.strerror)
                    return fd
                os.close(fd)
                raise
            try:  # the file we locked must still be the one at the path (not unlinked)
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def claim(self, resume: bool = False, overwrite: bool = False,
              extend: bool = False) -> FolderState:
        where = repr(str(self.out))
        try:
            self.created = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
            self.fd = self._lock()
        except RunFolderError:
            raise
        except FileExistsError:
            raise RunFolderError(f"--out {where} is a file, not a folder") from None
        except NotADirectoryError:
            raise RunFolderError(f"--out {where} cannot be created under a file") from None
        except OSError as exc:
            self._cleanup_created()
            raise RunFolderError(f"--out {where} cannot be used: {exc.strerror}") from None
        try:
            self._note_holder()
            self.state = inspect(self.out)
            problem = _mode_error(self.out, self.state, resume, overwrite, extend)
            if problem:
                raise RunFolderError(problem)
            if resume and self.state.kind in ("unfinished", "finished"):
                check_run_files(self.out)
            self._remove_temps()
        except BaseException:
            self.release(failed=True)
            raise
        return self.state

    def _note_holder(self) -> None:
        if self.fd is None:
            return
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        text = f"pid {os.getpid()} on host {socket.gethostname()} since {started}\n"
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, text.encode("utf-8"), 0)

    def _remove_temps(self) -> None:
        for p in self.out.iterdir():
            if _is_temp(p.name):
                with contextlib.suppress(OSError):
                    p.unlink()

    def clear(self) -> None:
        """Remove the files of the run this folder held (other files are kept)."""
        for name in RUN_FILES:  # unlink removes a link itself, never what it points to
            p = self.out / name
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(p).st_mode):
                    raise _not_regular(p, stat.S_IFDIR)
                p.unlink()
        for name in RUN_DIRS:
            p = self.out / name
            if p.is_symlink() or (p.exists() and not p.is_dir()):
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)
        fsync_dir(self.out)

    def _cleanup_created(self) -> None:
        if self.created:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # only if still empty

    def release(self, failed: bool = False) -> None:
        """Remove the lock file (while still holding it) and release the lock. ``failed``:
        the claim did not go through; a folder created by it is removed again when empty."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.lock_path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.lock_path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None
        if failed:
            self._cleanup_created()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
