"""Run identity without training: fingerprints, what a directory holds, anchor provenance, backbone identity.

The scripts' end-to-end checks (changed options after finished / interrupted runs, Stage I provenance,
OVERWRITE, a weights file named like a release) are in tests/test_protocol_scripts.py.
"""

from __future__ import annotations

import json
import shutil

import clip
import pytest
import torch

import trainers  # noqa: F401  (registers the trainers' config keys)
from anchoropt.backbone.loading import backbone_identity, file_sha256, load_clip, loaded_backbone_identity, model_dims
from anchoropt.cli.train import command_status
from anchoropt.cli.train import main as train_main
from anchoropt.config import build_config
from anchoropt.method.anchor_checkpoint import save_anchor
from anchoropt.runs.identity import (
    IDENTITY_FILE,
    NON_RESULT_KEYS,
    RunConflict,
    check_run,
    format_differences,
    is_replaced,
    move_aside,
    run_identity,
    run_status,
    write_identity,
)
from anchoropt.runs.provenance import anchor_note, anchor_provenance
from tests.support.clip_fixtures import tiny_clip, tiny_clip_dir, tiny_clip_state_dict_file  # noqa: F401


def cfg(*opts: str, trainer: str = "CoOp"):
    return build_config(opts=list(opts), overrides={"TRAINER.NAME": trainer, "DATASET.NAME": "OxfordPets"})


def fingerprint(*opts: str, trainer: str = "CoOp") -> str:
    return run_identity(cfg(*opts, trainer=trainer))["fingerprint"]


def test_fingerprint_covers_result_keys_only():
    base = fingerprint()
    assert fingerprint("OPTIM.MAX_EPOCH", "3") != base
    assert fingerprint("SEED", "2") != base and fingerprint("TRAINER.COOP.N_CTX", "8") != base
    # where files are, how they are loaded and printed: not part of a result
    for key, value in (
        ("OUTPUT_DIR", "/elsewhere"),
        ("DATASET.ROOT", "/data2"),
        ("DATALOADER.NUM_WORKERS", "7"),
        ("TRAIN.PRINT_FREQ", "1"),
        ("RUN.CONFIG_FILE", "x.yaml"),
    ):
        assert key in NON_RESULT_KEYS
        assert fingerprint(key, value) == base, key
    # another trainer's node does not change a CoOp run; Stage I ignores the Stage II prompt settings
    assert fingerprint("TRAINER.MAPLE.PROMPT_DEPTH", "2") == base
    stage1 = fingerprint(trainer="AnchorOPT_StageI")
    assert fingerprint("TRAINER.ANCHOROPT.N_CTX", "8", trainer="AnchorOPT_StageI") == stage1
    assert fingerprint("TRAINER.ANCHOROPT.ANCHOR_LEN", "2", trainer="AnchorOPT_StageI") != stage1
    assert fingerprint("TRAINER.ANCHOROPT.N_CTX", "8", trainer="CoOp_AnchorOPT") != fingerprint(
        trainer="CoOp_AnchorOPT"
    )


def finished_run(folder, config) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_identity(str(folder), run_identity(config))
    (folder / "results.json").write_text("{}")


def test_status_names_the_differing_keys_and_never_touches_the_run(tmp_path):
    run = tmp_path / "run"
    assert run_status(str(run), cfg()).state == "absent"
    finished_run(run, cfg("OPTIM.MAX_EPOCH", "100"))
    assert run_status(str(run), cfg("OPTIM.MAX_EPOCH", "100", "DATASET.ROOT", "/x")).state == "finished"
    status = run_status(str(run), cfg("OPTIM.MAX_EPOCH", "3", "TRAINER.COOP.N_CTX", "8"))
    assert status.state == "conflict" and status.previous == "finished"
    n_ctx = cfg().TRAINER.COOP.N_CTX
    assert format_differences(status.differences) == f"OPTIM.MAX_EPOCH: 100 -> 3, TRAINER.COOP.N_CTX: {n_ctx} -> 8"
    with pytest.raises(RunConflict) as error:
        check_run(str(run), cfg("OPTIM.MAX_EPOCH", "3"))
    message = str(error.value)
    assert "\n" not in message and "OPTIM.MAX_EPOCH: 100 -> 3" in message
    assert "OUTPUT=" in message and "--overwrite" in message and "OVERWRITE=1" in message

    (run / "results.json").unlink()  # a resume point and no results: interrupted
    (run / "prompt_learner").mkdir()
    (run / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    assert run_status(str(run), cfg("OPTIM.MAX_EPOCH", "100")).state == "interrupted"
    status = run_status(str(run), cfg("OPTIM.MAX_EPOCH", "3"))
    assert status.conflict and "an interrupted run" in status.message()


def test_a_run_that_left_nothing_to_keep_is_absent(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_identity(str(run), run_identity(cfg("OPTIM.MAX_EPOCH", "100")))
    (run / "log.txt").write_text("failed while building the model\n")
    assert run_status(str(run), cfg("OPTIM.MAX_EPOCH", "3")).state == "absent"


def test_results_from_before_fingerprints_are_compared_by_their_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"trainer": "CoOp", "config": cfg("OPTIM.MAX_EPOCH", "100").dump()}))
    assert run_status(str(run), cfg("OPTIM.MAX_EPOCH", "100")).state == "finished"
    assert format_differences(run_status(str(run), cfg("OPTIM.MAX_EPOCH", "5")).differences) == (
        "OPTIM.MAX_EPOCH: 100 -> 5"
    )


def test_move_aside_keeps_everything(tmp_path):
    run = tmp_path / "seed1"
    finished_run(run, cfg())
    first = move_aside(str(run))
    finished_run(run, cfg())
    second = move_aside(str(run))
    assert (first, second) == (f"{run}.replaced-1", f"{run}.replaced-2")
    assert sorted(p.name for p in (tmp_path / "seed1.replaced-1").iterdir()) == ["results.json", IDENTITY_FILE]
    assert is_replaced(f"{first}/results.json") and not is_replaced(str(run))


def test_train_py_refuses_a_changed_run_and_overwrite_moves_it_aside(tmp_path, capsys):
    out = tmp_path / "out"
    finished_run(out, cfg("OPTIM.MAX_EPOCH", "100"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["--trainer", "CoOp", "--output-dir", str(out), "--no-train", "DATASET.NAME", "OxfordPets"]
    args += ["OPTIM.MAX_EPOCH", "3"]
    with pytest.raises(RunConflict, match="OPTIM.MAX_EPOCH: 100 -> 3"):
        train_main(["--check-run", *args])
    status = command_status(args)  # the same answer for tools that run the scripts' commands
    assert status.state == "conflict" and status.differences == [("OPTIM.MAX_EPOCH", 100, 3)]
    with pytest.raises(RunConflict):
        train_main(args)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not even the lock file was written
    capsys.readouterr()
    assert train_main(["--check-run", "--overwrite", *args]) == 0 and capsys.readouterr().out == "conflict\n"


def test_anchor_provenance_descriptions_and_released_anchors(tmp_path):
    descriptions = tmp_path / "descriptions.json"
    descriptions.write_text(json.dumps({"cat": ["a cat."], "dog": ["a dog."]}))
    stage1 = cfg("TRAINER.ANCHOROPT.DESCRIPTIONS", str(descriptions), trainer="AnchorOPT_StageI")
    anchor_dir = tmp_path / "stage1"
    anchor_dir.mkdir()
    fp = run_identity(stage1)["fingerprint"]
    save_anchor(anchor_dir, torch.zeros(1, 8), ["cat", "dog"], {"provenance": anchor_provenance(fp, str(descriptions))})
    assert run_status(str(anchor_dir), stage1).state == "finished"
    descriptions.write_text(json.dumps({"cat": ["a cat."]}))  # a class less, same path
    status = run_status(str(anchor_dir), stage1)
    assert status.conflict and f"descriptions file {descriptions} (sha256)" in format_differences(status.differences)

    released = tmp_path / "released"
    released.mkdir()
    save_anchor(released, torch.zeros(1, 8), [], {})  # no provenance: used as it is, with a note
    status = run_status(str(released), stage1)
    assert status.state == "finished" and len(status.notes) == 1 and "no provenance" in status.notes[0]
    # Stage II given such an anchor (TRAINER.ANCHOROPT.ANCHOR_PATH): one note, and none for a provenanced one
    assert anchor_note(str(released)) == status.notes[0] and anchor_note(str(anchor_dir)) is None


def test_backbone_identity_from_the_file_loaded(tmp_path, tiny_clip_state_dict_file, monkeypatch):  # noqa: F811
    named = tmp_path / "ViT-B-16.pt"  # named like the release, holds something else
    shutil.copy(tiny_clip_state_dict_file, named)
    sha = file_sha256(str(named))
    model = load_clip(path=str(named))
    identity = loaded_backbone_identity(model)
    dims = model_dims(model)
    assert identity["label"] == f"ViT-B-16.pt@{sha[:8]}" and identity["name"] is None
    assert identity["sha256"] == sha and identity["source"] == "file"
    assert identity["architecture"] == {
        "embed_dim": dims.embed_dim,
        "input_resolution": dims.input_resolution,
        "vision_width": dims.vision_width,
        "vision_layers": dims.vision_layers,
        "vision_patch_size": dims.vision_patch_size,
        "text_width": dims.text_width,
        "text_layers": dims.text_layers,
    }
    # OpenAI's files are recognised by the sha256 in the clip package's URLs, whatever the file is called
    urls = dict(clip.clip._MODELS)
    urls["ViT-B/16"] = f"https://openaipublic.azureedge.net/clip/models/{sha}/ViT-B-16.pt"
    monkeypatch.setattr(clip.clip, "_MODELS", urls)
    renamed = tmp_path / "weights.bin"
    shutil.copy(named, renamed)
    assert backbone_identity(model, path=str(renamed))["label"] == "ViT-B/16"
    assert backbone_identity(model, name="ViT-B/16")["sha256"] == sha  # loaded by name: the published sha256


def test_file_hash_is_cached_per_path_size_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "w.pt"
    f.write_bytes(b"abc")
    first = file_sha256(str(f))
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert file_sha256(str(f)) == first and opened == []
    f.write_bytes(b"abcd")
    assert file_sha256(str(f)) != first and opened == [str(f)]
