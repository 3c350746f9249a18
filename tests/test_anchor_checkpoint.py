import pickle
import sys

import pytest
import torch

import anchoropt.method.anchor_checkpoint as anchor_checkpoint
from anchoropt.errors import CheckpointError
from anchoropt.method.anchor_checkpoint import ANCHOR_FILE_NAME, load_anchor, save_anchor
from anchoropt.method.official_checkpoint import is_inert, load_official_checkpoint
from tests.support.method_fixtures import (
    EvalPayload,
    ShellPayload,
    SubprocessPayload,
    write_malicious_checkpoint,
    write_official_checkpoint,
)

CLASSNAMES = ["abyssinian", "american_bulldog"]


# ---------------------------------------------------------------- our own format


def test_round_trip_keeps_tensor_names_and_plain_settings(tmp_path):
    anchor = torch.randn(2, 16, dtype=torch.float64)
    settings = {"ANCHOR_MSE_WEIGHT": 1000.0, "INPUT": {"SIZE": (224, 224)}, "NAME": "OxfordPets", "SEED": 1}
    path = save_anchor(tmp_path / "stage1" / "anchor.pth", anchor, CLASSNAMES, settings)
    record = load_anchor(path, expected_width=16, expected_len=2)
    assert record.anchor.dtype == torch.float32
    assert torch.equal(record.anchor, anchor.float())
    assert record.classnames == CLASSNAMES
    assert record.settings == {
        "ANCHOR_MSE_WEIGHT": 1000.0,
        "INPUT": {"SIZE": [224, 224]},
        "NAME": "OxfordPets",
        "SEED": 1,
    }
    assert record.source_format == "anchoropt"
    torch.load(path, weights_only=True)  # plain tensors and Python values only


def test_directory_path_saves_and_loads_the_default_file_name(tmp_path):
    path = save_anchor(tmp_path, torch.ones(1, 8), CLASSNAMES, {})
    assert path == tmp_path / ANCHOR_FILE_NAME
    assert torch.equal(load_anchor(tmp_path).anchor, torch.ones(1, 8))


def test_settings_must_be_plain_values(tmp_path):
    with pytest.raises(TypeError, match=r"settings\.model"):
        save_anchor(tmp_path / "a.pth", torch.ones(1, 8), CLASSNAMES, {"model": torch.nn.Linear(2, 2)})
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = save_anchor(tmp_path / "anchor.pth", torch.zeros(1, 8), CLASSNAMES, {})
    before = path.read_bytes()

    def broken_save(payload, stream):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(anchor_checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_anchor(path, torch.ones(1, 8), CLASSNAMES, {})
    assert path.read_bytes() == before
    assert [item.name for item in tmp_path.iterdir()] == ["anchor.pth"]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "nothing.pth")):
        load_anchor(tmp_path / "nothing.pth")


def test_wrong_width_and_length_name_path_and_both_shapes(tmp_path):
    path = save_anchor(tmp_path / "anchor.pth", torch.zeros(1, 16), CLASSNAMES, {})
    with pytest.raises(CheckpointError) as wrong_width:
        load_anchor(path, expected_width=32, expected_len=1)
    assert str(path) in str(wrong_width.value)
    assert "[1, 16]" in str(wrong_width.value) and "[1, 32]" in str(wrong_width.value)
    with pytest.raises(CheckpointError) as wrong_len:
        load_anchor(path, expected_width=16, expected_len=2)
    assert "[1, 16]" in str(wrong_len.value) and "[2, 16]" in str(wrong_len.value)
    assert "ANCHOR_LEN" in str(wrong_len.value)


def test_non_finite_and_non_anchor_files_are_refused(tmp_path):
    bad = save_anchor(tmp_path / "nan.pth", torch.tensor([[float("nan"), 1.0]]), CLASSNAMES, {})
    with pytest.raises(CheckpointError, match="NaN"):
        load_anchor(bad)
    other = tmp_path / "other.pth"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(CheckpointError, match="not an anchor checkpoint"):
        load_anchor(other)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_anchor(garbage)


# ---------------------------------------------------------------- official (Dassl) format


def test_official_format_fixture_is_refused_by_weights_only(tmp_path):
    real_dassl = sys.modules.get("dassl")  # None unless the real package is installed and imported
    path = write_official_checkpoint(tmp_path / "model.pth.tar", torch.randn(1, 16))
    assert sys.modules.get("dassl") is real_dassl  # the fake modules used for pickling are gone again
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_official_checkpoint_loads_safely_with_inert_scheduler(tmp_path):
    anchor = torch.randn(1, 16)
    path = write_official_checkpoint(tmp_path / "model.pth.tar", anchor)
    checkpoint = load_official_checkpoint(path)
    assert torch.equal(checkpoint["state_dict"]["anchor_ctx_1"], anchor.half())
    successor = checkpoint["scheduler"]["successor"]
    assert is_inert(successor)
    assert not isinstance(successor, torch.optim.lr_scheduler.LRScheduler)
    assert not hasattr(successor, "T_max") and not hasattr(successor, "__dict__")
    assert checkpoint["scheduler"]["cons_lr"] == 1e-5
    assert checkpoint["epoch"] == 100


def test_pickled_dassl_scheduler_object_becomes_inert(tmp_path):
    real_module = sys.modules.get("dassl.optim.lr_scheduler")  # set only where the real Dassl is imported
    path = write_official_checkpoint(tmp_path / "model.pth.tar", torch.randn(1, 16), pickle_scheduler_object=True)
    assert sys.modules.get("dassl.optim.lr_scheduler") is real_module
    scheduler = load_official_checkpoint(path)["scheduler"]
    assert is_inert(scheduler)
    assert "dassl.optim.lr_scheduler.ConstantWarmupScheduler" in repr(scheduler)


def test_load_anchor_reads_official_file_as_fp32(tmp_path):
    anchor = torch.randn(1, 16)
    path = write_official_checkpoint(tmp_path / "model.pth.tar", anchor, epoch=20)
    record = load_anchor(path, expected_width=16, expected_len=1)
    assert record.anchor.dtype == torch.float32
    assert torch.equal(record.anchor, anchor.half().float())
    assert record.source_format == "dassl"
    assert record.classnames == []
    assert record.settings == {"epoch": 20}


def test_dassl_directory_prefers_released_name_then_latest_epoch(tmp_path):
    folder = tmp_path / "run" / "anchor_prompt_learner"
    write_official_checkpoint(folder / "model.pth.tar-5", torch.full((1, 8), 5.0), epoch=5)
    write_official_checkpoint(folder / "model.pth.tar-10", torch.full((1, 8), 10.0), epoch=10)
    write_official_checkpoint(folder / "model-best.pth.tar", torch.full((1, 8), 1.0), epoch=1)
    assert load_anchor(tmp_path / "run").settings == {"epoch": 10}
    assert load_anchor(folder).settings == {"epoch": 10}
    write_official_checkpoint(folder / "model.pth.tar", torch.full((1, 8), 7.0), epoch=7)
    assert float(load_anchor(tmp_path / "run").anchor[0, 0]) == 7.0


def test_directory_without_checkpoint_explains_what_it_looked_for(tmp_path):
    (tmp_path / "anchor_prompt_learner").mkdir()
    with pytest.raises(CheckpointError, match="model.pth.tar-<epoch>"):
        load_anchor(tmp_path)


@pytest.mark.parametrize(
    "payload, refused",
    [(ShellPayload, "posix.system"), (EvalPayload, "builtins.eval"), (SubprocessPayload, "subprocess.call")],
)
def test_malicious_checkpoint_is_refused_before_running_anything(tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    path = write_malicious_checkpoint(tmp_path / "model.pth.tar", payload(marker), torch.randn(1, 8))
    with pytest.raises(CheckpointError) as error:
        load_anchor(path)
    assert f"refusing to unpickle {refused}" in str(error.value)
    assert str(path) in str(error.value)
    assert not marker.exists()
