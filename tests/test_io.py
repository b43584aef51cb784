import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cleanai.errors import CheckpointError, OutputError
from cleanai.io import (
    RUN_MARKER,
    atomic_dir,
    atomic_open,
    atomic_path,
    check_destination,
    load_state_dict,
    load_weights,
    save_safetensors,
)


def test_atomic_open_leaves_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_dir_replaces_folder_whole_or_not_at_all(tmp_path):
    run = tmp_path / "runs" / "demo"
    with atomic_dir(run) as stage:
        (stage / "a.json").write_text("1")
    assert (run / "a.json").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(run) as stage:
        (stage / "b.json").write_text("2")
        raise RuntimeError("crash")
    assert sorted(p.name for p in run.iterdir()) == [RUN_MARKER, "a.json"]
    assert sorted(p.name for p in run.parent.iterdir()) == ["demo"]


def test_atomic_dir_replaces_the_old_folder_instead_of_merging_into_it(tmp_path):
    run = tmp_path / "run"
    with atomic_dir(run) as stage:
        (stage / "old.json").write_text("1")
        (stage / "sub").mkdir()
    with atomic_dir(run) as stage:
        (stage / "new.json").write_text("2")
    assert sorted(p.name for p in run.iterdir()) == [RUN_MARKER, "new.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_folder_cleanai_did_not_write_is_refused_before_the_work_and_kept(tmp_path):
    user = tmp_path / "userproj"
    user.mkdir()
    (user / "main.py").write_text("print('mine')")
    ran = []
    with pytest.raises(OutputError, match=r"'.*userproj' is a folder CleanAI did not write.*overwrite=True"):
        with atomic_dir(user):
            ran.append(True)
    assert not ran and (user / "main.py").read_text() == "print('mine')"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["userproj"]
    with atomic_dir(user, overwrite=True) as stage:  # asked for explicitly: replaced whole
        (stage / "a.json").write_text("1")
    assert sorted(p.name for p in user.iterdir()) == [RUN_MARKER, "a.json"]


def test_an_empty_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as stage:
        (stage / "a.json").write_text("1")
    assert (tmp_path / "empty" / "a.json").is_file()


def test_a_file_is_never_replaced_by_a_folder_even_with_overwrite(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("only copy")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="is an existing file, and a folder never replaces a file"):
            with atomic_dir(precious, overwrite=overwrite):
                pass
    assert precious.read_text() == "only copy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_destinations_are_checked_for_kind_name_parent_and_writability(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "model.onnx").write_text("old")
    cases = [
        ("", "dir", "does not name a folder"),
        (".", "dir", "does not name a folder"),
        ("..", "dir", "does not name a folder"),
        (str(tmp_path.parent), "dir", "is the working directory or holds it"),
        ("notes.txt/sub", "dir", "lies under .*notes.txt', which is a file, not a folder"),
        ("/proc/cleanai-out", "dir", "cannot be written: '/proc' is not writable"),
        ("x" * 230, "dir", "keep it under 200"),
        ("folder", "file", "is an existing folder; give a file path such as 'folder/model.onnx'"),
        ("model.onnx", "file", "exists; choose a new file name, or pass --overwrite"),
    ]
    for path, kind, message in cases:
        with pytest.raises(OutputError, match=message):
            check_destination(path, kind=kind, option="--out")
    assert check_destination("model.onnx", kind="file", overwrite=True) == Path("model.onnx")
    assert check_destination("runs/new/deeper") == Path("runs/new/deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "model.onnx", "notes.txt"]  # checks write nothing


_KILLED_WRITER = """
import os, sys
from cleanai.io import atomic_dir, atomic_path
with atomic_path(sys.argv[1] + "/ckpt/last.pt") as tmp:
    with atomic_dir(sys.argv[1] + "/run") as stage:
        (stage / "model.safetensors").write_bytes(b"x" * 100)
        os._exit(9)  # killed mid-run: no cleanup code runs
"""


def test_what_a_killed_run_left_is_removed_by_the_next_run_to_the_same_place(tmp_path):
    (tmp_path / "ckpt").mkdir()
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], env=os.environ, check=False)
    assert done.returncode == 9
    left = sorted(p.name for p in tmp_path.iterdir()) + sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert len(left) == 3 and all(name.endswith(".tmp") for name in left if name != "ckpt")
    lookalikes = [tmp_path / ".run.notmine.tmp", tmp_path / "ckpt" / ".last.pt.MyBackup.tmp"]
    lookalikes[0].mkdir()  # a user's folder: not CleanAI's pattern (and no marker)
    lookalikes[1].write_text("mine")
    with atomic_dir(tmp_path / "run") as stage:
        (stage / "a.json").write_text("1")
    with atomic_path(tmp_path / "ckpt" / "last.pt") as tmp:
        tmp.write_bytes(b"ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.notmine.tmp", "ckpt", "run"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [".last.pt.MyBackup.tmp", "last.pt"]


def test_safetensors_roundtrip_handles_tied_weights(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    path = save_safetensors(model, tmp_path / "m.safetensors")
    sd = load_state_dict(path)
    assert torch.equal(sd["1.weight"], model[0].weight.detach())


def test_torch_checkpoint_with_module_prefix_loads(tmp_path):
    model = nn.Linear(3, 2)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "c.th")
    fresh = load_weights(nn.Linear(3, 2), tmp_path / "c.th")
    assert torch.equal(fresh.weight, model.weight)


class _Evil:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


class Custom:
    pass


def test_checkpoint_needing_a_custom_class_is_refused_by_name(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"weight": torch.ones(2), "extra": Custom()}, path)
    with pytest.raises(CheckpointError, match=r"arbitrary pickle code.*Custom"):
        load_state_dict(path)


def test_raw_pickle_with_code_is_refused_without_running_it(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"x": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="not a checkpoint CleanAI can read safely"):
        load_state_dict(path)
    assert "arbitrary code ran" not in capsys.readouterr().out


def test_non_checkpoint_and_missing_files_are_refused(tmp_path):
    for name, content in (("text.pt", b"not a checkpoint"), ("empty.pt", b""), ("zip.pt", b"PK\x03\x04junk")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=name):
            load_state_dict(tmp_path / name)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "nope.safetensors")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_state_dict(bad_st)


def test_missing_batchnorm_counters_are_filled_like_torch_does():
    bn = nn.BatchNorm1d(3)
    old_style = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    load_weights(nn.BatchNorm1d(3), old_style, strict=True)


def test_shape_mismatch_names_first_tensor(tmp_path):
    save_safetensors(nn.Linear(3, 5, bias=False), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"'weight' has shape \(5, 3\).*expects \(2, 3\)"):
        load_weights(nn.Linear(3, 2, bias=False), tmp_path / "w.safetensors")


def test_atomic_outputs_get_ordinary_permissions_not_private_temp_ones(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "f.txt") as fh:
            fh.write("x")
        save_safetensors(nn.Linear(2, 2), tmp_path / "w.safetensors")  # safetensors recreates the temp file
        with atomic_dir(tmp_path / "run"):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
