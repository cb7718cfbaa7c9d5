"""Hardening, second round (issue 22), files and checkpoints.

* no link is followed in a run folder: a symbolic link in place of ``.lock`` or of a run
  file that a resumed run keeps is refused (exit 2, one line) and its target is never
  written; a replaced run's links are unlinked, not followed; a hard-linked
  ``metrics.csv`` is not appended through;
* checkpoints with a valid checksum but crafted content (optimizer state of the wrong
  shape, dtype or values, string or NaN ``lr``, garbage scheduler state, an out-of-range
  ``perm``, NaN weights or ``best_value`` ...) are refused with one line naming the file
  and the field, before anything is trained or written; a checksum cannot be bypassed;
* ``load_run`` / ``rpnkit predict`` run the same field checks on model files (``epoch:
  -5``, ``x_std: 0``, NaN weights) and read ``config.yaml`` only under the 1 MiB guard;
* outputs (``predict --out``, exports) are written to a temporary file and renamed, never
  replace the run's own files, and a missing or read-only folder is one line, exit 2;
* ``train.threads`` is bounded; stdout JSON is valid (null for NaN/inf); error lines are
  bounded.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _cli_checks import one_line, refused
from rpnkit.cli import main
from rpnkit.config import RunConfig, parse_config
from rpnkit.training import checkpoint as C
from rpnkit.training.rundir import LOCK_NAME

SRC = str(Path(__file__).resolve().parents[2] / "src")
CFG = {
    "seed": 2,
    "device": "cpu",
    "plots": False,
    "data": {"name": "function", "expression": "cos(2*x0) + x0*x1",
             "ranges": [[-1, 1], [-1, 1]], "n_samples": 200,
             "split": {"train": 0.5, "val": 0.1, "test": 0.4},
             "standardize": True, "standardize_target": True},
    "model": {"name": "torch_mlp", "dims": [2, 8, 1]},
    "train": {"epochs": 6, "batch_size": 20, "dtype": "float64",
              "optimizer": {"name": "adam", "lr": 0.01}},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + env.get("PYTHONPATH", "")})
    return env




def _snapshot(folder: Path):
    return sorted((str(p.relative_to(folder)), os.path.islink(p),
                   p.read_bytes() if p.is_file() and not p.is_symlink() else None)
                  for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A config file, a finished run and an interrupted run (checkpoint.pt at epoch 2)."""
    from rpnkit.training import InterruptFlag, TrainingInterrupted, prepare, train_run

    root = tmp_path_factory.mktemp("h22")
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG), encoding="utf-8")
    assert main(["train", str(cfg), "--out", str(root / "finished"), "--quiet"]) == 0
    prep = prepare(parse_config(copy.deepcopy(CFG)))
    flag = InterruptFlag()

    def stop(epoch, rec):
        if epoch == 2:
            flag.set(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        train_run(prep, root / "interrupted", interrupt=flag, on_epoch_end=stop)
    assert (root / "interrupted" / "checkpoint.pt").is_file()
    return cfg, root / "finished", root / "interrupted"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _recheck(path: Path, mutate) -> None:
    """Edit a saved file and give it a valid checksum again (a crafted, consistent file)."""
    obj = torch.load(path, weights_only=True)
    body = {k: v for k, v in obj.items() if k != C.CHECKSUM_KEY}
    mutate(body)
    torch.save({**body, C.CHECKSUM_KEY: C.content_digest(body)}, path)


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize("mode", ["fresh into a stale folder", "overwrite", "resume"])
def test_symlinked_lock_is_refused_and_its_target_never_written(tmp_path, capsys, base, mode):
    cfg, finished, interrupted = base
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    if mode == "fresh into a stale folder":
        out = tmp_path / "run"
        out.mkdir()
        shutil.copy(finished / "config.yaml", out / "config.yaml")
        extra = []
    elif mode == "overwrite":
        out, extra = _copy(finished, tmp_path / "run"), ["--overwrite"]
    else:
        out, extra = _copy(interrupted, tmp_path / "run"), ["--resume"]
    (out / LOCK_NAME).symlink_to(victim)
    snap = _snapshot(out)
    refused(capsys, ["train", str(cfg), "--out", str(out), "--quiet", *extra],
             str(out / LOCK_NAME), "symbolic link")
    assert victim.read_text() == "precious\n"
    assert _snapshot(out) == snap


def test_lock_taken_through_open_run_file_refuses_a_link_at_claim_time(tmp_path):
    """The claim itself (after the early check) opens .lock with O_NOFOLLOW."""
    from rpnkit.training.rundir import RunFolder, RunFolderError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(RunFolderError, match="symbolic link"):
        RunFolder(out).claim()
    assert victim.read_text() == "precious\n"
    (out / LOCK_NAME).unlink()
    os.link(victim, out / LOCK_NAME)  # a hard link would be truncated and written too
    with pytest.raises(RunFolderError, match="hard link"):
        RunFolder(out).claim()
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("name", ["metrics.csv", "config.yaml", "checkpoint.pt"])
def test_symlinked_run_file_on_resume_is_refused(tmp_path, capsys, base, name):
    cfg, _, interrupted = base
    out = _copy(interrupted, tmp_path / "run")
    victim = tmp_path / "victim"
    shutil.move(out / name, victim)  # the link even points at the genuine content
    (out / name).symlink_to(victim)
    before = victim.read_bytes()
    snap = _snapshot(out)
    refused(capsys, ["train", str(cfg), "--out", str(out), "--quiet", "--resume"],
             str(out / name), "symbolic link")
    assert victim.read_bytes() == before
    assert _snapshot(out) == snap


def test_replaced_run_unlinks_its_links_and_keeps_their_targets(tmp_path, capsys, base):
    cfg, finished, _ = base
    out = _copy(finished, tmp_path / "run")
    keep = tmp_path / "keep"
    keep.mkdir()
    for name in ("metrics.csv", "model.pt", "metrics.json"):
        shutil.move(out / name, keep / name)
        (out / name).symlink_to(keep / name)
    tb = keep / "tb"
    tb.mkdir()
    (tb / "events").write_text("mine")
    (out / "tensorboard").symlink_to(tb)
    before = {p.name: p.read_bytes() for p in keep.iterdir() if p.is_file()}
    assert main(["train", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 0
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in keep.iterdir() if p.is_file()} == before
    assert (tb / "events").read_text() == "mine"
    for name in ("metrics.csv", "model.pt", "metrics.json"):
        assert (out / name).is_file()
        assert not (out / name).is_symlink()
    assert not (out / "tensorboard").exists()


def test_hard_linked_metrics_csv_is_not_appended_through(tmp_path, capsys, base):
    """A backup made with ``cp -al`` shares metrics.csv's inode: the resumed run writes its
    own copy and the backup keeps the rows it had."""
    cfg, _, interrupted = base
    out = _copy(interrupted, tmp_path / "run")
    backup = tmp_path / "backup.csv"
    os.link(out / "metrics.csv", backup)
    before = backup.read_text()
    assert main(["train", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0
    capsys.readouterr()
    assert backup.read_text() == before
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + CFG["train"]["epochs"]
    assert os.stat(out / "metrics.csv").st_nlink == 1


def test_epoch_log_appends_only_to_a_regular_file(tmp_path):
    from rpnkit.training.run import EpochLog
    from rpnkit.training.rundir import RunFolderError

    victim = tmp_path / "victim.csv"
    victim.write_text("epoch,loss\n")
    out = tmp_path / "run"
    out.mkdir()
    log = EpochLog(out, tensorboard=False)
    log(1, {"epoch": 1, "loss": 0.5})  # the header: a new file
    (out / "metrics.csv").unlink()
    (out / "metrics.csv").symlink_to(victim)
    log.trimmed = True  # as if resumed: the next row is appended
    with pytest.raises(RunFolderError, match="symbolic link"):
        log(2, {"epoch": 2, "loss": 0.25})
    assert victim.read_text() == "epoch,loss\n"


# --------------------------------------------------------------------------- checkpoints


def _opt_state(body, pid=0):
    return body["optimizer"]["state"][pid]


def _set_perm(body, perm):
    body["batch"] = 3
    body["perm"] = perm
    body["last_good"] = body["model"]


CRAFTED = {
    "optimizer state of another dtype": (
        lambda b: _opt_state(b).update(exp_avg=_opt_state(b)["exp_avg"].float()), "dtype"),
    "optimizer state with NaN": (
        lambda b: _opt_state(b)["exp_avg_sq"].fill_(math.nan), "NaN"),
    "optimizer state with an unknown entry": (
        lambda b: _opt_state(b).update(evil=torch.zeros(3)), "evil"),
    "optimizer state for no parameter": (
        lambda b: b["optimizer"]["state"].update({99: {}}), "99"),
    "optimizer step negative": (
        lambda b: _opt_state(b).update(step=torch.tensor(-1.0)), "step"),
    "lr a string": (
        lambda b: b["optimizer"]["param_groups"][0].update(lr="0.01"), "lr"),
    "lr NaN": (
        lambda b: b["optimizer"]["param_groups"][0].update(lr=math.nan), "lr"),
    "betas changed": (
        lambda b: b["optimizer"]["param_groups"][0].update(betas=(0.0, -1.0)), "betas"),
    "param group with an unknown entry": (
        lambda b: b["optimizer"]["param_groups"][0].update(step=1), "unknown entry"),
    "scheduler T_max 0": (lambda b: b["scheduler"].update(T_max=0), "T_max"),
    "scheduler attribute injected": (lambda b: b["scheduler"].update(get_lr=3), "get_lr"),
    "scheduler last_epoch a string": (
        lambda b: b["scheduler"].update(last_epoch="3"), "last_epoch"),
    "scheduler _last_lr NaN": (
        lambda b: b["scheduler"].update(_last_lr=[math.nan]), "_last_lr"),
    "scheduler dropped": (lambda b: b.update(scheduler=None), "scheduler"),
    "perm out of range": (
        lambda b: _set_perm(b, torch.full((100,), 10**9, dtype=torch.int64)), "perm"),
    "perm with a repeat": (
        lambda b: _set_perm(b, torch.zeros(100, dtype=torch.int64)), "perm"),
    "NaN weights": (
        lambda b: b["model"]["net.0.weight"].fill_(math.nan), "model weights"),
    "weights of another dtype": (
        lambda b: b["model"].update({"net.0.weight": b["model"]["net.0.weight"].float()}),
        "dtype"),
    "NaN best weights": (
        lambda b: b["best_state"]["net.0.bias"].fill_(math.inf), "best weights"),
    "best_value NaN": (lambda b: b.update(best_value=math.nan), "best_value"),
    "best epoch past the checkpoint": (lambda b: b["best"].update(epoch=5), "best epoch"),
    "history record holding a tensor": (
        lambda b: b["history"][0].update(train_loss=torch.zeros(3)), "history[0]"),
    "generator state of the wrong size": (
        lambda b: b.update(generator=torch.zeros(7, dtype=torch.uint8)), "generator"),
    "format relabelled": (lambda b: b.update(format=C.MODEL_FORMAT), "format"),
}


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_crafted_checkpoint_with_a_valid_checksum_is_refused(tmp_path, capsys, base, kind):
    cfg, _, interrupted = base
    out = _copy(interrupted, tmp_path / "run")
    mutate, field = CRAFTED[kind]
    _recheck(out / "checkpoint.pt", mutate)
    snap = _snapshot(out)
    refused(capsys, ["train", str(cfg), "--out", str(out), "--quiet", "--resume"],
             str(out / "checkpoint.pt"), field)
    assert _snapshot(out) == snap  # nothing written, nothing removed, no lock left


def _wrong_shapes(body):
    st = _opt_state(body)
    st["exp_avg"] = torch.zeros(300, 300, dtype=torch.float64)
    st["exp_avg_sq"] = torch.zeros(2, dtype=torch.float64)


# states that used to reach the fused Adam kernel with tensors of other shapes and crashed
# the process (rc 134/139): tried in a child, so that such a crash fails the test only
IN_A_CHILD = {
    "optimizer state of the wrong shape": (
        _wrong_shapes, "optimizer state[0]['exp_avg'] has shape (300, 300)"),
    "parameter ids permuted": (
        lambda b: b["optimizer"]["param_groups"][0].update(params=[1, 0, 2, 3]), "params"),
}


@pytest.mark.parametrize("kind", list(IN_A_CHILD))
def test_crafted_optimizer_state_is_refused_not_a_heap_corruption(tmp_path, base, kind):
    _, _, interrupted = base
    out = _copy(interrupted, tmp_path / "run")
    mutate, field = IN_A_CHILD[kind]
    _recheck(out / "checkpoint.pt", mutate)
    snap = _snapshot(out)
    r = subprocess.run([sys.executable, "-m", "rpnkit", "train", "--resume", str(out), "--quiet"],
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert one_line(r.stderr), r.stderr
    assert field in r.stderr
    assert str(out / "checkpoint.pt") in r.stderr
    assert _snapshot(out) == snap


def test_engine_checks_the_optimizer_it_restores(base):
    """``fit(resume=state)`` checks the state against its own optimizer and scheduler."""
    from rpnkit.training import fit, prepare

    _, _, interrupted = base
    prep = prepare(parse_config(copy.deepcopy(CFG)))
    state = C.load_checked(interrupted / "checkpoint.pt")
    # (a wrong shape is the same check; it is not tried here, in-process, because before the
    # check it crashed the process: see IN_A_CHILD)
    state["optimizer"]["state"][1]["exp_avg"] = torch.zeros(8, dtype=torch.float32)
    with pytest.raises(C.CheckpointError, match=r"state\[1\]\['exp_avg'\] has dtype "
                                                r"torch.float32, the optimizer needs torch.float64"):
        fit(prep.model, prep.bundle, prep.cfg.train, seed=2, resume=state)


def test_checkpoint_without_checksum_is_refused_whatever_its_format(tmp_path):
    for fmt in ("rpnkit-train-state-1", "rpnkit-model-1", C.TRAIN_STATE_FORMAT, None):
        path = tmp_path / "c.pt"
        torch.save({"format": fmt, "epoch": 1}, path)
        with pytest.raises(C.CheckpointError, match="no sha256 checksum"):
            C.load_checked(path)
    C.atomic_torch_save({"format": C.MODEL_FORMAT, "epoch": 1}, path)
    with pytest.raises(C.CheckpointError, match="format 'rpnkit-model-2' is not"):
        C.load_checked(path, formats=(C.TRAIN_STATE_FORMAT,))
    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(C.CheckpointError, match="not a regular file"):
        C.load_checked(tmp_path / "fifo.pt")  # refused without opening (a FIFO would block)


def test_lbfgs_and_sgd_states_are_checked_too(tmp_path):
    """L-BFGS keeps flat vectors of all parameters; SGD a momentum buffer per parameter."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)

    def closure(opt):
        def f():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss
        return f

    lb = torch.optim.LBFGS(model.parameters(), history_size=4, line_search_fn="strong_wolfe")
    for _ in range(3):
        lb.step(closure(lb))
    good = lb.state_dict()
    C.check_optimizer_state(good, lb, "lbfgs")
    bad = copy.deepcopy(good)
    bad["state"][0]["old_dirs"] = [torch.zeros(3, dtype=torch.float64)]
    with pytest.raises(C.CheckpointError, match=r"old_dirs'\]\[0\] has shape \(3,\), the "
                                                r"optimizer needs \(21,\)"):
        C.check_optimizer_state(bad, lb, "lbfgs")
    bad = copy.deepcopy(good)
    bad["state"][0]["ro"] = [torch.tensor(1.0, dtype=torch.float64)] * 5
    with pytest.raises(C.CheckpointError, match="at most 4 entries"):
        C.check_optimizer_state(bad, lb, "lbfgs")
    bad = copy.deepcopy(good)
    bad["state"][0]["n_iter"] = -3
    with pytest.raises(C.CheckpointError, match="n_iter"):
        C.check_optimizer_state(bad, lb, "lbfgs")

    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    closure(sgd)()
    sgd.step()
    good = sgd.state_dict()
    C.check_optimizer_state(good, sgd, "sgd")
    bad = copy.deepcopy(good)
    bad["state"][2]["momentum_buffer"] = torch.zeros(4, 4, dtype=torch.float64)
    with pytest.raises(C.CheckpointError, match=r"state\[2\]\['momentum_buffer'\] has shape"):
        C.check_optimizer_state(bad, sgd, "sgd")


# --------------------------------------------------------------------------- model files


MODEL_CRAFTED = {
    "epoch -5": (lambda b: b.update(epoch=-5), "epoch"),
    "NaN weights": (lambda b: b["state_dict"]["net.2.weight"].fill_(math.nan), "NaN"),
    "weights of another dtype": (
        lambda b: b["state_dict"].update({"net.0.bias": b["state_dict"]["net.0.bias"].float()}),
        "dtype"),
    "x_std 0": (lambda b: b["preprocessing"]["x_std"].__setitem__(0, 0.0), "x_std[0]"),
    "x_mean NaN": (lambda b: b["preprocessing"]["x_mean"].__setitem__(1, math.nan), "x_mean"),
    "x_mean of the wrong width": (lambda b: b["preprocessing"].update(x_mean=[0.0] * 3),
                                  "x_mean"),
    "y_std negative": (lambda b: b["preprocessing"].update(y_std=[-1.0]), "y_std"),
    "task unknown": (lambda b: b["preprocessing"].update(task="ranking"), "task"),
    "kind unknown": (lambda b: b.update(kind="evil"), "kind"),
    "format relabelled": (lambda b: b.update(format=C.TRAIN_STATE_FORMAT), "format"),
}


@pytest.mark.parametrize("kind", list(MODEL_CRAFTED))
def test_crafted_model_file_is_refused_by_predict_and_load_run(tmp_path, capsys, base, kind):
    import rpnkit

    _, finished, _ = base
    run = _copy(finished, tmp_path / "run")
    mutate, field = MODEL_CRAFTED[kind]
    _recheck(run / "model.pt", mutate)
    data = tmp_path / "x.csv"
    data.write_text("x0,x1\n0.1,0.2\n0.3,-0.4\n")
    snap = _snapshot(run)
    refused(capsys, ["predict", str(run), str(data)], str(run / "model.pt"), field)
    refused(capsys, ["eval", str(run)], str(run / "model.pt"), field)
    with pytest.raises(rpnkit.errors.ConfigurationError, match="model.pt"):
        rpnkit.load_run(run)
    assert _snapshot(run) == snap


def test_load_run_checks_the_size_of_config_yaml_before_reading_it(tmp_path, base, monkeypatch):
    import rpnkit

    _, finished, _ = base
    run = _copy(finished, tmp_path / "run")
    with open(run / "config.yaml", "a", encoding="utf-8") as f:
        f.write("#" * (1 << 20) + "\n")
    real = Path.read_text

    def guarded(self, *a, **k):
        assert self.name != "config.yaml", "config.yaml was read whole before the size check"
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", guarded)
    with pytest.raises(rpnkit.errors.ConfigurationError, match="larger than 1,048,576 bytes"):
        rpnkit.load_run(run)
    (run / "config.yaml").unlink()
    os.mkfifo(run / "config.yaml")  # never opened for reading (it would block)
    with pytest.raises(rpnkit.errors.ConfigurationError):
        rpnkit.load_run(run)


def test_sound_model_files_still_load_and_predict(tmp_path, capsys, base):
    import rpnkit

    _, finished, _ = base
    run = rpnkit.load_run(finished)
    x = [[0.1, 0.2], [0.3, -0.4]]
    assert run.predict(x).shape == (2,)
    data = tmp_path / "x.csv"
    data.write_text("x0,x1\n0.1,0.2\n0.3,-0.4\n")
    assert main(["predict", str(finished), str(data)]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert [float(r[0]) for r in rows[1:]] == pytest.approx(run.predict(x).tolist(), rel=1e-12)


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("name", ["model.pt", "best.pt", "checkpoint.pt", "metrics.json"])
def test_export_never_replaces_the_runs_own_files(tmp_path, capsys, base, name):
    _, finished, _ = base
    run = _copy(finished, tmp_path / "run")
    snap = _snapshot(run)
    refused(capsys, ["export", str(run), "--out", str(run / name)], name, "never replaces")
    refused(capsys, ["export", str(run), "--out", str(run / ".." / "run" / name)], "never")
    data = tmp_path / "x.csv"
    data.write_text("x0,x1\n0.1,0.2\n")
    refused(capsys, ["predict", str(run), str(data), "--out", str(run / name)], "never")
    assert _snapshot(run) == snap


def test_export_to_a_missing_or_read_only_folder_is_one_line(tmp_path, capsys, base):
    _, finished, _ = base
    run = _copy(finished, tmp_path / "run")
    refused(capsys, ["export", str(run), "--out", str(tmp_path / "nowhere" / "m.ts")],
             "does not exist")
    refused(capsys, ["export", str(run), "--out", str(tmp_path)], "is a folder")
    refused(capsys, ["export", str(run), "--out", str(tmp_path / "a\0b.ts")], "NUL")
    # a folder no file can be created in (root may write anywhere: /proc/self is refused)
    if os.geteuid() == 0:
        target = Path("/proc/self/model.ts")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "model.ts"
    err = refused(capsys, ["export", str(run), "--out", str(target)], str(target))
    assert "enforce fail" not in err
    assert not target.exists()


def test_export_and_predict_replace_a_link_never_its_target(tmp_path, capsys, base):
    _, finished, _ = base
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "model.ts"
    out.symlink_to(victim)
    assert main(["export", str(finished), "--out", str(out)]) == 0
    capsys.readouterr()
    assert victim.read_text() == "precious\n"
    assert out.is_file()
    assert not out.is_symlink()
    scripted = torch.jit.load(str(out))
    assert scripted(torch.zeros(2, 2, dtype=torch.float64)).shape == (2, 1)
    data = tmp_path / "x.csv"
    data.write_text("x0,x1\n0.1,0.2\n")
    preds = tmp_path / "preds.csv"
    preds.symlink_to(victim)
    assert main(["predict", str(finished), str(data), "--out", str(preds)]) == 0
    capsys.readouterr()
    assert victim.read_text() == "precious\n"
    assert len(preds.read_text().splitlines()) == 2  # a header and one prediction
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_interrupted_predict_leaves_no_partial_output(tmp_path, capsys, base, monkeypatch):
    """An interrupt in the middle of writing (here on the fourth row) leaves the old file as
    it was and no temporary file: exit 130."""
    _, finished, _ = base
    data = tmp_path / "x.csv"
    data.write_text("x0,x1\n" + "".join(f"{i / 50},{-i / 50}\n" for i in range(40)))
    preds = tmp_path / "preds.csv"
    preds.write_text("old\n")
    real = csv.writer

    class Stopping:
        def __init__(self, f):
            self.w, self.n = real(f), 0

        def writerow(self, row):
            self.n += 1
            if self.n == 4:
                raise KeyboardInterrupt
            return self.w.writerow(row)

    monkeypatch.setattr(csv, "writer", Stopping)
    assert main(["predict", str(finished), str(data), "--out", str(preds)]) == 130
    capsys.readouterr()
    assert preds.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv", "x.csv"]


def test_predict_out_with_sigterm_writes_nothing_partial(tmp_path, base):
    """SIGTERM while the CSV is written: no preds.csv, no temporary file (exit 130). The
    child stops itself right after its first row, so the signal cannot come too late."""
    _, finished, _ = base
    data = tmp_path / "x.csv"
    data.write_text("x0,x1\n" + "".join(f"{i / 50},{-i / 50}\n" for i in range(40)))
    code = ("import csv, os, signal, sys\n"
            "real = csv.writer\n"
            "class W:\n"
            "    def __init__(self, f): self.w, self.n = real(f), 0\n"
            "    def writerow(self, row):\n"
            "        self.n += 1\n"
            "        if self.n == 2: os.kill(os.getpid(), signal.SIGTERM)\n"
            "        return self.w.writerow(row)\n"
            "csv.writer = W\n"
            "from rpnkit.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    preds = tmp_path / "preds.csv"
    r = subprocess.run([sys.executable, "-c", code, "predict", str(finished), str(data),
                        "--out", str(preds)], capture_output=True, text=True, env=_env(),
                       timeout=600)
    assert r.returncode == 130, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


# --------------------------------------------------------------------------- bounds, output


def test_threads_are_bounded_by_the_machine(tmp_path, capsys, monkeypatch):
    import rpnkit.training as T

    most = 4 * (os.cpu_count() or 1)
    RunConfig.model_validate({**CFG, "train": {**CFG["train"], "threads": most}})
    for bad in (most + 1, 100_000, 10**30):
        with pytest.raises(ValueError, match=f"threads must be from 1 to {most}"):
            RunConfig.model_validate({**CFG, "train": {**CFG["train"], "threads": bad}})

    def boom(*a, **k):
        raise AssertionError("prepare() ran: threads were not checked first")

    monkeypatch.setattr(T, "prepare", boom)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    refused(capsys, ["train", str(cfg), "--out", str(tmp_path / "o"), "--set",
                      "train.threads=100000"], "threads", f"1 to {most}")
    assert not (tmp_path / "o").exists()


def test_stdout_json_is_valid_with_null_for_non_finite(tmp_path, capsys, base, monkeypatch):
    import numpy as np

    import rpnkit.training as T

    _, finished, _ = base

    def nan_eval(*a, **k):
        return {"test": {"loss": float("nan"), "r2": float("-inf"), "mse": np.float64("inf")},
                "epoch": 6, "checkpoint": "model.pt"}

    monkeypatch.setattr(T, "eval_run", nan_eval)
    assert main(["eval", str(finished)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]

    def no_constants(name):
        raise AssertionError(f"invalid JSON constant {name}")

    res = json.loads(line, parse_constant=no_constants)
    assert res["test"] == {"loss": None, "r2": None, "mse": None}


def test_error_lines_are_bounded_for_huge_integers(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    width = "9" * 99
    code = main(["train", str(cfg), "--out", str(tmp_path / "o"), "--set",
                 f"model.dims=[2,{width},1]"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1
    assert len(err) < 700, len(err)
    assert width not in err
