"""Crash-safe, exclusive run folders: fault injection against ``rpnkit train`` / ``eval``.

* SIGKILL at random moments (fixed RNG), then ``--resume``: never more than the checkpoint
  interval is lost and the resumed run ends with exactly the metrics of an uninterrupted run
  (float64); 3 trials here, 20 with ``-m slow``;
* two runs started together into one folder: exactly one trains, the other exits 2 with one
  line (5 trials); a held lock refuses, a lock left by a dead process does not;
* truncated / empty / bit-flipped / edited checkpoints and model files are refused with exit
  2 and one line naming the file, and nothing is written;
* bad ``--out`` values and seeds exit 2 before data or model are built;
* a write that fails (full disk) leaves no partial file and a resumable folder;
* files get the usual permissions; stale, unfinished and finished folders behave as
  documented in :mod:`rpnkit.training.rundir`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from _cli_checks import one_line, refused
from rpnkit.cli import main
from rpnkit.config import RunConfig, TrainConfig, parse_config
from rpnkit.training import checkpoint as C
from rpnkit.training import fit, prepare
from rpnkit.training.run import load_train_state
from rpnkit.training.rundir import LOCK_NAME, RunFolder

EPOCHS = 60
CFG = {
    "seed": 2,
    "device": "cpu",
    "plots": False,
    "data": {"name": "function", "expression": "cos(2*x0) + x0*x1",
             "ranges": [[-1, 1], [-1, 1]], "n_samples": 400,
             "split": {"train": 0.5, "val": 0.1, "test": 0.4}},
    "model": {"name": "torch_mlp", "dims": [2, 16, 1]},
    # 10 mini-batches per epoch, so that kills land mid-epoch as well as between epochs
    "train": {"epochs": EPOCHS, "batch_size": 20, "dtype": "float64",
              "optimizer": {"name": "adam", "lr": 0.01}},
}
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + env.get("PYTHONPATH", "")})
    return env


def _write(folder: Path, cfg: dict | None = None, name: str = "cfg.yaml", **train) -> Path:
    c = copy.deepcopy(cfg or CFG)
    c["train"].update(train)
    path = folder / name
    path.write_text(yaml.safe_dump(c), encoding="utf-8")
    return path


def _results(out: Path):
    m = json.loads((out / "metrics.json").read_text())
    return m["final"], m["best"], [h["train_loss"] for h in m["history"]]


def _csv(out: Path) -> list[list[str]]:
    """metrics.csv without its wall-clock column (``seconds`` differs from run to run)."""
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("seconds")
    return [r[:col] + r[col + 1:] for r in rows]


def _rows(out: Path) -> int:
    p = out / "metrics.csv"
    if not p.exists():
        return 0
    return sum(1 for line in p.read_text().splitlines()[1:] if line)


def _snapshot(p: Path):
    if not p.exists():
        return None
    if p.is_file():
        return p.read_bytes()
    return sorted((str(q.relative_to(p)), q.read_bytes() if q.is_file() else None)
                  for q in p.rglob("*"))




@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (in-process): its results and its finished folder."""
    base = tmp_path_factory.mktemp("ref")
    out = base / "ref"
    assert main(["train", str(_write(base)), "--out", str(out), "--quiet"]) == 0
    return _results(out), out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A folder whose run was interrupted after 3 epochs (a valid checkpoint.pt)."""
    from rpnkit.training import InterruptFlag, TrainingInterrupted, train_run

    base = tmp_path_factory.mktemp("int")
    cfg_path = _write(base)
    prep = prepare(parse_config(yaml.safe_load(cfg_path.read_text())))
    flag = InterruptFlag()

    def stop(epoch, rec):
        if epoch == 3:
            flag.set(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        train_run(prep, base / "run", interrupt=flag, on_epoch_end=stop)
    assert (base / "run" / "checkpoint.pt").is_file()
    return cfg_path, base / "run"


# --------------------------------------------------------------------------- SIGKILL


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kill_and_resume(tmp_path: Path, ref, rng: random.Random, mode: str, kills: int = 1):
    """Start a run, SIGKILL it at a random moment ``kills`` times (each restart with --resume
    in a subprocess), check how much was lost, then --resume to the end (in-process).

    What is lost is measured in what the machine's load cannot stretch: epochs (a checkpoint
    every epoch: at most one epoch lost) or the child's CPU time (every 0.2 s of wall-clock
    time: at most the CPU time of 0.2 s, one step and a save, bounded generously by 1.2 s,
    since a descheduled child spends wall-clock time but no CPU time). The CPU time at each
    save is read when the test sees the new checkpoint, which can only under-count the loss.
    No wall-clock bound is asserted; the waits are hang guards of 600 s."""
    interval = {"seconds": {"checkpoint_seconds": 0.2, "checkpoint_every": 0},
                "epochs": {"checkpoint_seconds": 0, "checkpoint_every": 1}}[mode]
    cfg = _write(tmp_path, **interval)
    out = tmp_path / "run"
    ckpt = out / "checkpoint.pt"
    report = []

    def ckpt_id():
        try:
            st = ckpt.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    for k in range(kills):
        cmd = [sys.executable, "-m", "rpnkit", "train", str(cfg), "--out", str(out), "--quiet"]
        if k:
            cmd.append("--resume")
        before = ckpt_id()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        deadline = time.monotonic() + 600
        seen = {"id": before, "cpu_at_save": None, "cpu": 0.0}

        def poll(seen=seen, proc=proc, scratch=not k) -> None:
            """Note the child's CPU time now and at the first sight of each new checkpoint
            (or, before any, of its config.yaml: training starts from scratch there)."""
            with contextlib.suppress(OSError, IndexError, ValueError):
                seen["cpu"] = _cpu_seconds(proc.pid)
            now = ckpt_id()
            if now is not None and now != seen["id"]:
                seen["id"], seen["cpu_at_save"] = now, seen["cpu"]
            elif seen["cpu_at_save"] is None and scratch and (out / "config.yaml").exists():
                seen["cpu_at_save"] = seen["cpu"]

        while k and proc.poll() is None and ckpt_id() == before:
            assert time.monotonic() < deadline, "the resumed run made no progress"
            time.sleep(0.003)  # a restart: wait until it trains again (its first new save)
        poll()
        # a random moment: after a random number of logged epochs (sometimes the last one,
        # to hit the final writes) plus a random part of an epoch
        target = rng.choice([EPOCHS, *range(min(_rows(out) + 1, EPOCHS), EPOCHS)])
        pause = rng.uniform(0.0, 0.08)
        while _rows(out) < target and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            poll()
            time.sleep(0.003)
        time.sleep(pause)
        poll()
        cpu_killed = seen["cpu"]
        proc.kill()
        _, err = proc.communicate(timeout=600)
        if proc.returncode == 0:  # it finished first
            report.append("finished before the kill")
            break
        assert proc.returncode == -signal.SIGKILL, err
        if (out / "metrics.json").exists() and not ckpt.exists():
            report.append("killed after the results were complete")
            break
        rows = _rows(out)
        if ckpt.exists():
            state = load_train_state(ckpt, prepare(parse_config(yaml.safe_load(cfg.read_text()))))
            pos = (state["epoch"], state["batch"])
        else:
            pos = (0, 0)
        if mode == "epochs":  # at most one epoch (the interval) lost
            assert rows - pos[0] <= 1, (rows, pos)
        elif pos[0] < EPOCHS and seen["cpu_at_save"] is not None:
            # a save after the last look (ckpt_id changed) lost even less than this
            lost = cpu_killed - seen["cpu_at_save"]
            assert lost <= 0.2 + 1.0, (lost, rows, pos)
        report.append(f"killed at {rows} epochs, checkpoint at {pos}")
    if not (out / "metrics.json").exists() or (out / "checkpoint.pt").exists():
        assert main(["train", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0
    assert _results(out) == ref, report
    assert _rows(out) == EPOCHS  # metrics.csv: one row per epoch, none twice
    assert not (out / "checkpoint.pt").exists()
    assert not (out / LOCK_NAME).exists()
    assert not list(out.glob(".*.tmp"))  # temporary files of killed writes are cleaned up
    return report


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_at_random_moments_then_resume(tmp_path, reference, capsys, trial):
    rng = random.Random(1000 + trial)
    _kill_and_resume(tmp_path, reference[0], rng, ("seconds", "epochs")[trial % 2])
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(20))
def test_sigkill_at_random_moments_then_resume_many(tmp_path, reference, capsys, trial):
    rng = random.Random(2000 + trial)
    _kill_and_resume(tmp_path, reference[0], rng, ("seconds", "epochs")[trial % 2],
                     kills=1 + trial % 3)
    capsys.readouterr()


def test_checkpoints_by_time_mid_epoch_and_at_the_end(monkeypatch, tmp_path):
    import rpnkit.training.engine as E

    assert TrainConfig().checkpoint_seconds == 60  # periodic by default
    saves = []
    real = E.atomic_torch_save

    def spy(obj, path):
        saves.append((obj["epoch"], obj["batch"]))
        real(obj, path)

    monkeypatch.setattr(E, "atomic_torch_save", spy)
    cfg = parse_config({**CFG, "train": {**CFG["train"], "epochs": 3, "checkpoint_seconds": 1e-9}})
    prep = prepare(cfg)
    fit(prep.model, prep.bundle, cfg.train, seed=2, checkpoint_path=tmp_path / "c.pt")
    assert (0, 1) in saves
    assert any(b > 0 for _, b in saves)
    assert (1, 0) in saves
    assert saves[-1] == (3, 0)
    state = load_train_state(tmp_path / "c.pt", prep)
    assert state["format"] == C.TRAIN_STATE_FORMAT
    assert state["epoch"] == 3

    saves.clear()  # both intervals 0: no periodic files at all
    cfg0 = parse_config({**CFG, "train": {**CFG["train"], "epochs": 3, "checkpoint_seconds": 0}})
    prep = prepare(cfg0)
    fit(prep.model, prep.bundle, cfg0.train, seed=2, checkpoint_path=tmp_path / "d.pt")
    assert saves == []
    assert not (tmp_path / "d.pt").exists()


# --------------------------------------------------------------------------- exclusivity


# each process imports everything, says it is ready, then waits for the same start signal:
# the pairs race for their folders at the same moment
_RACER = ("import sys, time, pathlib, rpnkit.cli, rpnkit.training, rpnkit.training.run; "
          "ready, go = map(pathlib.Path, sys.argv[1:3]); ready.touch(); "
          "[time.sleep(0.002) for _ in iter(lambda: go.exists(), True)]; "
          "sys.exit(rpnkit.cli.main(sys.argv[3:]))")


def test_two_runs_started_together_exactly_one_trains(tmp_path):
    cfg = _write(tmp_path, epochs=20)
    go = tmp_path / "go"
    procs, reasons = [], []
    for t in range(5):  # 5 trials, all at once; each a pair of runs into one folder
        out = tmp_path / f"run{t}"
        pair = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path / f"ready{t}{seed}"),
                                  str(go), "train", str(cfg), "--out", str(out), "--quiet",
                                  "--set", f"seed={seed}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=_env()) for seed in (5, 6)]
        procs.append((out, pair))
    deadline = time.monotonic() + 600
    while len(list(tmp_path.glob("ready*"))) < 10:
        assert time.monotonic() < deadline, "the runs did not start"
        assert all(p.poll() is None for _, pair in procs for p in pair)
        time.sleep(0.01)
    go.touch()
    for out, pair in procs:
        res = [p.communicate(timeout=600) + (p.returncode,) for p in pair]
        codes = [r[2] for r in res]
        assert sorted(codes) == [0, 2], res
        winner = codes.index(0)
        loser_err = res[1 - winner][1]
        assert one_line(loser_err), loser_err
        reasons.append("in use" if "in use by another rpnkit run" in loser_err else "finished")
        assert reasons[-1] == "in use" or "holds a finished run" in loser_err, loser_err
        seed = (5, 6)[winner]
        assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == seed
        assert torch.load(out / "model.pt", weights_only=True)["config"]["seed"] == seed
        assert _rows(out) == 20
        assert not (out / LOCK_NAME).exists()
    print("losers saw:", reasons)


def test_held_lock_refuses_and_dead_lock_does_not(tmp_path, capsys, monkeypatch, reference):
    import rpnkit.training as T

    cfg = _write(tmp_path)
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.claim()
    try:
        snap = _snapshot(out)
        refused(capsys, ["train", str(cfg), "--out", str(out)], "in use by another rpnkit run",
                 f"pid {os.getpid()}")
        refused(capsys, ["train", str(cfg), "--out", str(out), "--resume"], "in use")
        assert _snapshot(out) == snap

        # the same when the lock is taken between the check and the claim
        monkeypatch.setattr(T.rundir, "_probe_busy", lambda out: None)
        monkeypatch.setattr(T.rundir, "LOCK_WAIT_S", 0.2)
        refused(capsys, ["train", str(cfg), "--out", str(out)], "in use by another rpnkit run")
        assert _snapshot(out) == snap
    finally:
        holder.release()
    monkeypatch.undo()
    # a lock file left by a killed process is not held by anyone: the folder is usable
    out.mkdir(exist_ok=True)
    (out / LOCK_NAME).write_text("pid 999999 on host gone since yesterday\n")
    assert main(["train", str(cfg), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert _results(out) == reference[0]
    assert not (out / LOCK_NAME).exists()


# --------------------------------------------------------------------------- damaged files


def _flip_in_tensor_data(path: Path, bit: int = 4) -> None:
    with zipfile.ZipFile(path) as z:
        big = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    off = big.header_offset
    start = off + 30 + int.from_bytes(raw[off + 26:off + 28], "little") \
        + int.from_bytes(raw[off + 28:off + 30], "little")
    raw[start + big.file_size // 2] ^= 1 << bit
    path.write_bytes(bytes(raw))


def _edit(path: Path, keep_checksum: bool, **fields) -> None:
    obj = torch.load(path, weights_only=True)
    obj.update(fields)
    if keep_checksum:  # a consistent file with a bad field: validation must catch it
        body = {k: v for k, v in obj.items() if k != C.CHECKSUM_KEY}
        obj[C.CHECKSUM_KEY] = C.content_digest(body)
    torch.save(obj, path)


def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-tail":
        path.write_bytes(data[:-10])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif kind == "bit-flipped":
        _flip_in_tensor_data(path)
    elif kind == "epoch -5":
        _edit(path, False, epoch=-5)
    elif kind == "epoch -5 (checksum redone)":
        _edit(path, True, epoch=-5)
    elif kind == "epoch past the end (checksum redone)":
        _edit(path, True, epoch=EPOCHS + 1)
    elif kind == "batch -1 (checksum redone)":
        _edit(path, True, batch=-1)
    elif kind == "history too short (checksum redone)":
        _edit(path, True, history=[])
    elif kind == "wrong weights (checksum redone)":
        obj = torch.load(path, weights_only=True)
        key = "model" if "model" in obj else "state_dict"
        sd = dict(obj[key])
        sd["extra.weight"] = torch.zeros(1)
        _edit(path, True, **{key: sd})
    elif kind == "checksum removed":
        obj = torch.load(path, weights_only=True)
        del obj[C.CHECKSUM_KEY]
        torch.save(obj, path)
    else:  # pragma: no cover
        raise AssertionError(kind)


CHECKPOINT_DAMAGE = ["truncated", "truncated-tail", "empty", "garbage", "bit-flipped", "epoch -5",
                     "epoch -5 (checksum redone)", "epoch past the end (checksum redone)",
                     "batch -1 (checksum redone)", "history too short (checksum redone)",
                     "wrong weights (checksum redone)", "checksum removed"]


@pytest.mark.parametrize("kind", CHECKPOINT_DAMAGE)
def test_damaged_checkpoint_is_refused_on_resume(tmp_path, capsys, interrupted, kind):
    cfg, src = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    _damage(out / "checkpoint.pt", kind)
    snap = _snapshot(out)
    refused(capsys, ["train", str(cfg), "--out", str(out), "--quiet", "--resume"],
             str(out / "checkpoint.pt"))
    assert _snapshot(out) == snap  # nothing written, nothing removed, no lock left


def test_random_bit_flips_are_refused_or_harmless(interrupted):
    """Any single flipped bit: refused with CheckpointError, or (zip padding / unused bytes)
    the content is exactly what was saved. Never another exception, never other values."""
    cfg, src = interrupted
    prep = prepare(parse_config(yaml.safe_load(cfg.read_text())))
    good = load_train_state(src / "checkpoint.pt", prep)
    digest = C.content_digest(good)
    raw = (src / "checkpoint.pt").read_bytes()
    rng = random.Random(7)
    path = src.parent / "flipped.pt"
    messages = []
    for _ in range(150):
        b = bytearray(raw)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(b))
        try:
            state = load_train_state(path, prep)
        except C.CheckpointError as exc:
            messages.append(str(exc))
        else:
            assert C.content_digest(state) == digest
    assert len(messages) > 100
    assert all(str(path) in m and "\n" not in m for m in messages)


def test_relabelled_checkpoint_without_checksum_is_refused(tmp_path, capsys, interrupted):
    """The checksum cannot be bypassed by dropping it and relabelling the format as the
    pre-checksum ``-1`` format (such files are refused, whatever their fields)."""
    cfg, src = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    obj = torch.load(out / "checkpoint.pt", weights_only=True)
    del obj[C.CHECKSUM_KEY]
    obj["format"] = "rpnkit-train-state-1"
    obj["epoch"] = 2  # an edit the checksum would have caught
    torch.save(obj, out / "checkpoint.pt")
    snap = _snapshot(out)
    refused(capsys, ["train", str(cfg), "--out", str(out), "--quiet", "--resume"],
             str(out / "checkpoint.pt"), "no sha256 checksum")
    assert _snapshot(out) == snap


@pytest.mark.parametrize(("name", "kind"), [
    ("model.pt", "truncated"), ("model.pt", "empty"), ("model.pt", "bit-flipped"),
    ("model.pt", "epoch -5"), ("model.pt", "epoch -5 (checksum redone)"),
    ("model.pt", "wrong weights (checksum redone)"), ("model.pt", "garbage"),
    ("best.pt", "truncated"), ("best.pt", "bit-flipped"), ("best.pt", "empty"),
])
def test_eval_refuses_a_damaged_model_file(tmp_path, capsys, reference, name, kind):
    out = tmp_path / "run"
    shutil.copytree(reference[1], out)
    _damage(out / name, kind)
    argv = ["eval", str(out)] + (["--best"] if name == "best.pt" else [])
    refused(capsys, argv, str(out / name))


def test_eval_of_a_sound_folder_matches_training(capsys, reference):
    assert main(["eval", str(reference[1])]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["test"] == reference[0][0]["test"]


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def no_prepare(monkeypatch):
    """Fail the test if data or a model is built."""
    import rpnkit.training as T

    def boom(*a, **k):
        raise AssertionError("prepare() ran: --out was not checked first")

    monkeypatch.setattr(T, "prepare", boom)


def test_bad_out_paths_exit_2_before_anything_is_built(tmp_path, capsys, no_prepare):
    cfg = _write(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("keep")
    refused(capsys, ["train", str(cfg), "--out", str(afile)], "is a file")
    refused(capsys, ["train", str(cfg), "--out", str(afile / "sub" / "run")], "is a file")
    assert afile.read_text() == "keep"
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    refused(capsys, ["train", str(cfg), "--out", str(link)], "broken symbolic link")
    # a folder nobody can create files in (root may write anywhere: use /proc there)
    if os.geteuid() == 0:
        target = Path("/proc/self/rpnkit-run")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "run"
    refused(capsys, ["train", str(cfg), "--out", str(target)], "not writable")
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cfg.yaml", "afile", "dangling"] + ([] if os.geteuid() == 0 else ["ro"]))
    refused(capsys, ["train", str(cfg), "--out", str(tmp_path / "x"), "--resume",
                      "--overwrite"], "exclude each other")
    refused(capsys, ["train", str(cfg), "--out", str(tmp_path / "x"), "--resume"],
             "does not exist")
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="drops root privileges to test a 0555 folder")
def test_unwritable_folder_as_another_user(tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="rpnkit-ro-"))  # /tmp/pytest-of-root is 0700
    try:
        base.chmod(0o755)
        cfg = _write(base)
        cfg.chmod(0o644)
        ro = base / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        code = ("import os, sys, rpnkit.cli, rpnkit.training, rpnkit.training.run, "
                "rpnkit.training.rundir, rpnkit.config, rpnkit.data, rpnkit.models, yaml, json, "
                "fcntl, socket, hashlib, errno, zipfile, tempfile; os.setgid(65534); "
                "os.setuid(65534); sys.exit(rpnkit.cli.main(sys.argv[1:]))")
        r = subprocess.run([sys.executable, "-c", code, "train", str(cfg), "--out",
                            str(ro / "run")], capture_output=True, text=True, env=_env(),
                           timeout=600)
        assert r.returncode == 2, r.stderr
        assert one_line(r.stderr), r.stderr
        assert "not writable" in r.stderr
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("sets", [["seed=-1"], [f"seed={2**32}"], ["train.checkpoint_seconds=-1"],
                                  ["train.checkpoint_seconds=.nan"]])
def test_bad_seed_and_interval_exit_2(tmp_path, capsys, no_prepare, sets):
    out = tmp_path / "never"
    argv = ["train", str(_write(tmp_path)), "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    refused(capsys, argv, sets[0].split("=")[0].split(".")[-1])
    assert not out.exists()
    RunConfig.model_validate({**CFG, "seed": 2**32 - 1})  # the range is [0, 2**32 - 1]


# --------------------------------------------------------------------------- disk full


def test_disk_full_at_a_checkpoint_leaves_a_resumable_folder(tmp_path, capsys, reference):
    """RLIMIT_FSIZE makes every write past 3,500 bytes fail (EFBIG), as a full disk would:
    config.yaml and metrics.csv fit, the first checkpoint does not."""
    cfg = _write(tmp_path, checkpoint_every=1)
    out = tmp_path / "run"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (3500, resource.RLIM_INFINITY))

    r = subprocess.run([sys.executable, "-m", "rpnkit", "train", str(cfg), "--out", str(out),
                        "--quiet"], capture_output=True, text=True, env=_env(), timeout=600,
                       preexec_fn=limit)
    assert r.returncode == 1, r.stderr
    assert one_line(r.stderr), r.stderr
    assert "File too large" in r.stderr
    assert str(out / "checkpoint.pt") in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.csv"]  # no partial
    assert main(["train", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0  # scratch
    capsys.readouterr()
    assert _results(out) == reference[0]
    assert _rows(out) == EPOCHS


@pytest.mark.parametrize("target", ["model.pt", "checkpoint.pt", "metrics.json"])
def test_disk_full_keeps_old_files_and_no_partial_one(tmp_path, capsys, monkeypatch, target):
    import errno

    cfg = _write(tmp_path, checkpoint_every=1)
    out = tmp_path / "run"
    real = C.atomic_write
    calls = {"n": 0}

    def full(path, write):
        if Path(path).name == target:
            calls["n"] += 1
            if calls["n"] == 3 or target != "checkpoint.pt":
                def partial(f):
                    f.write(b"x" * 100)
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(path, partial)
        return real(path, write)

    import rpnkit.training.run as R

    monkeypatch.setattr(C, "atomic_write", full)
    monkeypatch.setattr(R, "atomic_write", full)
    code = main(["train", str(cfg), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert one_line(err), err
    assert "No space left on device" in err
    assert str(out / target) in err
    assert not list(out.glob(".*.tmp"))
    assert not (out / LOCK_NAME).exists()
    if target == "checkpoint.pt":  # the previous checkpoint (epoch 2) is intact
        assert load_train_state(out / "checkpoint.pt", prepare(parse_config(
            yaml.safe_load(cfg.read_text()))))["epoch"] == 2
    elif target == "model.pt":
        assert not (out / "model.pt").exists()
    monkeypatch.undo()
    assert main(["train", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0


# --------------------------------------------------------------------------- folder states


def test_files_get_the_usual_permissions(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        cfg = {**CFG, "plots": True, "train": {**CFG["train"], "epochs": 2}}
        out = tmp_path / "run"
        assert main(["train", str(_write(tmp_path, cfg)), "--out", str(out), "--quiet"]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert "fit.png" in modes
    assert "model.pt" in modes
    assert set(modes.values()) == {0o640}, modes


@pytest.mark.parametrize("resume", [False, True])
def test_stale_folder_restarts(tmp_path, capsys, reference, resume):
    """A run that died before its first checkpoint left config.yaml and a few csv rows (the
    last one cut short): a fresh run and --resume both start it again from scratch."""
    cfg = _write(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(reference[1] / "config.yaml", out / "config.yaml")
    text = (reference[1] / "metrics.csv").read_text()
    (out / "metrics.csv").write_text(text[: len(text) // 3])
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"partial")
    argv = ["train", str(cfg), "--out", str(out), "--quiet"] + (["--resume"] if resume else [])
    assert main(argv) == 0
    capsys.readouterr()
    assert _results(out) == reference[0]
    assert _csv(out) == _csv(reference[1])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in reference[1].iterdir())


def test_resume_trims_rows_logged_after_the_checkpoint(tmp_path, capsys, interrupted,
                                                       reference):
    cfg, src = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    with open(out / "metrics.csv", "a") as f:  # rows of epochs 4-5, then a crash mid-row
        f.write("4,0.1,0.01,0.1,0.1,0.1,0.1,0.5\n5,0.1,0.01,0.1,0.1,0.1,0.1,0.5\n6,0.")
    assert main(["train", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0
    capsys.readouterr()
    assert _results(out) == reference[0]
    assert _csv(out) == _csv(reference[1])


def test_finished_unfinished_and_foreign_folders(tmp_path, capsys, reference, interrupted):
    cfg = _write(tmp_path)
    fin = tmp_path / "fin"
    shutil.copytree(reference[1], fin)
    snap = _snapshot(fin)
    refused(capsys, ["train", str(cfg), "--out", str(fin)], "finished run", "--overwrite")
    refused(capsys, ["train", str(cfg), "--out", str(fin), "--resume"], "finished run")
    assert _snapshot(fin) == snap
    (fin / "notes.txt").write_text("mine")
    assert main(["train", str(cfg), "--out", str(fin), "--quiet", "--overwrite",
                 "--set", "seed=9"]) == 0
    capsys.readouterr()
    assert yaml.safe_load((fin / "config.yaml").read_text())["seed"] == 9
    assert torch.load(fin / "model.pt", weights_only=True)["config"]["seed"] == 9
    assert (fin / "notes.txt").read_text() == "mine"  # only the run's own files are replaced

    unf = tmp_path / "unf"
    shutil.copytree(interrupted[1], unf)
    snap = _snapshot(unf)
    refused(capsys, ["train", str(cfg), "--out", str(unf)], "unfinished run", "--resume")
    assert _snapshot(unf) == snap
    assert main(["train", str(cfg), "--out", str(unf), "--quiet", "--overwrite"]) == 0
    capsys.readouterr()
    assert _results(unf) == reference[0]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("keep me")
    for extra in ([], ["--overwrite"], ["--resume"]):
        refused(capsys, ["train", str(cfg), "--out", str(foreign), *extra], "already exists")
    assert sorted(p.name for p in foreign.iterdir()) == ["x"]
