import pickle

import pytest
import torch
from torch import nn

from cleanai.errors import CheckpointError
from cleanai.io import atomic_dir, atomic_open, load_state_dict, load_weights, save_safetensors


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
    assert sorted(p.name for p in run.iterdir()) == ["a.json"]
    assert sorted(p.name for p in run.parent.iterdir()) == ["demo"]


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
    import os

    mask = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "f.txt") as fh:
            fh.write("x")
        with atomic_dir(tmp_path / "run"):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
