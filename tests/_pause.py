"""Interrupt tests that cannot race the clock.

A child ``rpnkit`` process run through this module pauses at the end of epoch ``EPOCH``
(rank 0, right after that epoch's metrics row) and creates ``READY``; it then waits until
one of the signals rpnkit handles (SIGINT, SIGTERM, SIGHUP) has reached rpnkit's handler,
and goes on. So the run can neither finish before the interrupt nor be interrupted before
it has trained ``EPOCH`` epochs, however busy the machine: the test waits for ``READY``
(:func:`wait_for`, a generous hang guard) and then sends its signal. rpnkit itself runs
unchanged: the signal takes the same path as in a real run, and training stops at the next
check with a checkpoint of epoch ``EPOCH``.

Child usage (also under torchrun, as ``-m _pause``)::

    python -m _pause READY EPOCH train cfg.yaml --out RUN ...

with :func:`child_env` (``PYTHONPATH`` holding ``src`` and this folder).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
PAUSE_S = 600.0  # a hang guard only: a signal normally arrives within milliseconds
WAIT_S = 600.0


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that can run ``-m _pause`` and ``-m rpnkit``."""
    env = dict(os.environ)
    path = os.pathsep.join([str(SRC), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra})
    return env


def command(ready: Path, epoch: int, *rpnkit_args: str) -> list[str]:
    """``python -m _pause READY EPOCH rpnkit_args...``."""
    return [sys.executable, "-m", "_pause", str(ready), str(epoch), *rpnkit_args]


def wait_for(path: Path, proc, timeout: float = WAIT_S) -> None:
    """Wait until ``path`` exists; fail (with the child's stderr) if the child ends first or
    nothing happens for ``timeout`` seconds (a hang guard, far above any normal wait)."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the child ended (rc {proc.returncode}) before {path.name}: "
                                 f"{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout:.0f} s")
        time.sleep(0.02)


def _install(ready: Path, epoch: int) -> None:
    from rpnkit.training import engine, run

    seen: list[int] = []
    set_flag = engine.InterruptFlag.set

    def flag_set(self, signum=engine.signal.SIGINT):
        set_flag(self, signum)
        seen.append(signum)

    engine.InterruptFlag.set = flag_set
    log_epoch = run.EpochLog.__call__

    def paused(self, e, rec):
        log_epoch(self, e, rec)
        if e == epoch:
            ready.touch()
            deadline = time.monotonic() + PAUSE_S
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)  # a signal interrupts the sleep and runs rpnkit's handler

    run.EpochLog.__call__ = paused


def main(argv: list[str]) -> int:
    ready, epoch, *rest = argv
    _install(Path(ready), int(epoch))
    from rpnkit.cli import main as cli

    return cli(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
