"""``anchoropt-prepare-data``: the report on a partly complete data root, and verified downloads."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from anchoropt.cli import prepare_data
from anchoropt.cli.errors import run_cli
from anchoropt.datasets import preparation
from anchoropt.datasets.catalog import CATALOG, IMAGENET_CLASSNAMES_GDRIVE_ID
from anchoropt.errors import ConfigError, DataError
from tests.support.data_layouts import write_dataset


def report_rows(output: str) -> dict[str, list[str]]:
    """Table rows by dataset name, split on runs of two or more spaces."""
    rows = {}
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] in CATALOG:
            rows[cells[0]] = cells
    return rows


@pytest.fixture
def partial_root(tmp_path):
    """Pets complete; Caltech without its split; SUN397 with images gone; ImageNet-A without classnames.txt."""
    root = tmp_path / "data"
    for name in ("OxfordPets", "Caltech101", "SUN397", "ImageNetA"):
        write_dataset(name, root)
    os.remove(root / "caltech-101" / "split_zhou_Caltech101.json")
    shutil.rmtree(root / "sun397" / "SUN397" / "a" / "abbey")
    os.remove(root / "imagenet-adversarial" / "classnames.txt")
    return root


def test_report_on_a_partly_complete_root(partial_root, capsys):
    assert prepare_data.main(["--root", str(partial_root)]) == 1
    out = capsys.readouterr().out
    rows = report_rows(out)
    assert set(rows) == set(CATALOG)
    assert rows["OxfordPets"][1] == "ready" and "split_zhou_OxfordPets.json" in rows["OxfordPets"][2]
    assert rows["OxfordPets"][4] == "5 (CoOp: 37)"
    assert rows["Caltech101"][1] == "incomplete" and rows["Caltech101"][3] == "split_zhou_Caltech101.json"
    assert rows["SUN397"][1] == "error"
    assert rows["ImageNetA"][1] == "incomplete" and rows["ImageNetA"][3] == "classnames.txt"
    assert rows["Food101"][1:4] == ["not found", "-", "food-101/"]
    # Where things go: absolute paths and how to get them.
    assert f"missing: {partial_root / 'caltech-101' / 'split_zhou_Caltech101.json'}" in out
    assert "--download-splits" in out
    assert f"missing: {partial_root / 'imagenet-adversarial' / 'classnames.txt'}" in out
    assert "10 of 40 images listed in split_zhou_SUN397.json are missing" in out and "a/abbey/" in out


def test_exit_status_counts_present_or_named_datasets(partial_root, capsys):
    assert prepare_data.main(["--root", str(partial_root), "--datasets", "oxford_pets"]) == 0
    assert prepare_data.main(["--root", str(partial_root), "--datasets", "OxfordPets", "food-101"]) == 1
    out = capsys.readouterr().out
    assert f"missing: {partial_root / 'food-101'}/" in out and "food-101.tar.gz" in out
    shutil.rmtree(partial_root / "caltech-101")
    shutil.rmtree(partial_root / "sun397")
    shutil.rmtree(partial_root / "imagenet-adversarial")
    assert prepare_data.main(["--root", str(partial_root)]) == 0  # absent folders alone do not fail


def test_trial_load_reports_a_loader_error(tmp_path, capsys):
    root = tmp_path / "data"
    write_dataset("FGVCAircraft", root)
    os.remove(min((root / "fgvc_aircraft" / "images").iterdir()))  # the same image whatever the listing order
    assert prepare_data.main(["--root", str(root), "--datasets", "FGVCAircraft"]) == 1
    rows = report_rows(capsys.readouterr().out)
    assert rows["FGVCAircraft"][1] == "error"
    assert prepare_data.main(["--root", str(root), "--datasets", "FGVCAircraft", "--no-load"]) == 0


def test_root_must_exist_and_names_must_be_known(tmp_path, capsys):
    with pytest.raises(DataError, match="data root not found"):
        prepare_data.main(["--root", str(tmp_path / "nope")])
    assert run_cli(prepare_data.main)(["--root", str(tmp_path / "nope")]) == 2
    assert "error: data root not found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="Unknown dataset 'pets'"):
        prepare_data.main(["--root", str(tmp_path), "--datasets", "pets"])


# --------------------------------------------------------------------------- downloads


def fake_split(num_classes: int) -> dict:
    rows = {
        k: [[f"c{c}/{k}_{i}.jpg", c, f"class {c}"] for c in range(num_classes) for i in range(2)]
        for k in ("train", "val", "test")
    }
    return rows


class FakeDrive:
    """Stands in for Google Drive: file id -> bytes (or an exception)."""

    def __init__(self, files: dict[str, bytes | Exception]) -> None:
        self.files = files
        self.calls: list[tuple[str, str]] = []

    def __call__(self, file_id: str, dest: str) -> None:
        self.calls.append((file_id, dest))
        content = self.files[file_id]
        if isinstance(content, Exception):
            raise content
        with open(dest, "wb") as f:
            f.write(content)


PETS_ID = CATALOG["OxfordPets"].split.gdrive_id


def test_download_writes_a_verified_split(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    (root / "oxford_pets").mkdir(parents=True)
    drive = FakeDrive({PETS_ID: json.dumps(fake_split(37)).encode()})
    monkeypatch.setattr(preparation, "download_from_google_drive", drive)
    prepare_data.main(["--root", str(root), "--download-splits", "--no-load"])
    target = root / "oxford_pets" / "split_zhou_OxfordPets.json"
    assert [c[0] for c in drive.calls] == [PETS_ID]  # other datasets' folders are absent: nothing fetched
    assert json.loads(target.read_text()) == fake_split(37)
    assert sorted(os.listdir(root / "oxford_pets")) == ["split_zhou_OxfordPets.json"]  # no temp files left
    out = capsys.readouterr().out
    assert "downloaded" in out and "74 train, 74 val, 74 test" in out
    # Present and valid: kept, not fetched again.
    prepare_data.main(["--root", str(root), "--datasets", "OxfordPets", "--download-splits", "--no-load"])
    assert len(drive.calls) == 1


@pytest.mark.parametrize(
    "bad, reason",
    [
        (b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>", "HTML page"),
        (json.dumps(fake_split(12)).encode(), "12 classes"),
        (b'{"train": [], "val": []}', "missing the 'test'"),
        (DataError("connection reset"), "connection reset"),
    ],
)
def test_bad_download_never_overwrites(tmp_path, monkeypatch, capsys, bad, reason):
    root = tmp_path / "data"
    write_dataset("OxfordPets", root)
    target = root / "oxford_pets" / "split_zhou_OxfordPets.json"
    before = target.read_bytes()
    drive = FakeDrive({PETS_ID: bad if isinstance(bad, bytes) else preparation.DownloadError(str(bad))})
    monkeypatch.setattr(preparation, "download_from_google_drive", drive)
    rc = prepare_data.main(["--root", str(root), "--datasets", "OxfordPets", "--download-splits", "--force"])
    assert rc == 1 and len(drive.calls) == 1
    assert target.read_bytes() == before
    assert not [n for n in os.listdir(target.parent) if n.startswith(".")]
    out = capsys.readouterr().out
    assert "failed" in out and reason in out and "nothing was written" in out


def test_bad_download_of_a_missing_file_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "dtd").mkdir(parents=True)
    dtd_id = CATALOG["DescribableTextures"].split.gdrive_id
    monkeypatch.setattr(preparation, "download_from_google_drive", FakeDrive({dtd_id: b"<html>denied</html>"}))
    outcomes = preparation.fetch_hosted_files(str(root), ["DescribableTextures"], explicit=True)
    assert [o.status for o in outcomes] == ["failed"]
    assert os.listdir(root / "dtd") == []


def test_named_dataset_folder_is_created_and_flowers_names_fetched(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    facts = CATALOG["OxfordFlowers"]
    names = {str(i): f"flower {i}" for i in range(1, 103)}
    drive = FakeDrive(
        {
            facts.split.gdrive_id: json.dumps(fake_split(102)).encode(),
            "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0": json.dumps(names).encode(),
        }
    )
    monkeypatch.setattr(preparation, "download_from_google_drive", drive)
    outcomes = preparation.fetch_hosted_files(str(root), ["OxfordFlowers"], explicit=True)
    assert [(os.path.basename(o.path), o.status) for o in outcomes] == [
        ("split_zhou_OxfordFlowers.json", "downloaded"),
        ("cat_to_name.json", "downloaded"),
    ]
    assert json.loads((root / "oxford_flowers" / "cat_to_name.json").read_text()) == names


def test_variants_copy_imagenet_classnames_without_downloading(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet-rendition").mkdir()
    lines = "".join(f"n{i:08d} class {i}\n" for i in range(1000))
    (root / "imagenet" / "classnames.txt").write_text(lines)
    drive = FakeDrive({})
    monkeypatch.setattr(preparation, "download_from_google_drive", drive)
    outcomes = preparation.fetch_hosted_files(str(root), ["ImageNet", "ImageNetR", "ImageNetA"], explicit=False)
    assert [o.status for o in outcomes] == ["present", "copied", "skipped"]
    assert (root / "imagenet-rendition" / "classnames.txt").read_text() == lines
    assert drive.calls == []
    # Without a local copy the file is downloaded and must hold 1000 '<wnid> <name>' lines.
    shutil.rmtree(root / "imagenet")
    shutil.rmtree(root / "imagenet-rendition")
    (root / "imagenetv2").mkdir()
    monkeypatch.setattr(
        preparation, "download_from_google_drive", FakeDrive({IMAGENET_CLASSNAMES_GDRIVE_ID: b"n01440764 tench\n"})
    )
    outcome = preparation.fetch_hosted_files(str(root), ["ImageNetV2"], explicit=False)[0]
    assert outcome.status == "failed" and "1 class names, expected the 1000" in outcome.detail


def test_gdown_wrapper(monkeypatch, tmp_path):
    import gdown

    seen = {}

    def fake_download(**kwargs):
        seen.update(kwargs)
        return None

    monkeypatch.setattr(gdown, "download", fake_download)
    with pytest.raises(preparation.DownloadError, match="could not download"):
        preparation.download_from_google_drive("abc", str(tmp_path / "x"))
    assert seen["id"] == "abc" and seen["output"] == str(tmp_path / "x")

    def failing(**kwargs):
        raise RuntimeError("Too many users have viewed or downloaded this file recently")

    monkeypatch.setattr(gdown, "download", failing)
    with pytest.raises(preparation.DownloadError, match="Too many users"):
        preparation.download_from_google_drive("abc", str(tmp_path / "x"))
