import json
from pathlib import Path

import pytest

import anchoropt.cli.descriptions as cli
from anchoropt.errors import ConfigError, DataError
from anchoropt.method.descriptions import (
    DESCRIPTION_SOURCES,
    DescriptionSource,
    default_descriptions_path,
    load_descriptions,
)

README = Path(__file__).resolve().parents[1] / "descriptions" / "README.md"


def _write(path: Path, content) -> Path:
    path.write_text(json.dumps(content) if not isinstance(content, str) else content, encoding="utf-8")
    return path


def _sentences(name: str, count: int) -> list[str]:
    return [f"A photo of a {name}, sentence {index}." for index in range(count)]


# ---------------------------------------------------------------- loader


def test_tolerant_matching_keeps_class_order_and_truncates(tmp_path):
    path = _write(
        tmp_path / "d.json",
        {
            "Sea or Lake": _sentences("sea", 5),
            "american bulldog": _sentences("bulldog", 5),
            "globe-flower": _sentences("globe", 5),
            "Apply Eye Makeup": _sentences("makeup", 5),
            "wild cat": _sentences("cat", 5),
            "unused": _sentences("unused", 5),
        },
    )
    classes = ["American_Bulldog", " apply_eye_makeup ", "globe flower", "SeaLake", "wildcat"]
    loaded = load_descriptions(path, classes, 3)
    assert loaded == [
        _sentences("bulldog", 3),
        _sentences("makeup", 3),
        _sentences("globe", 3),
        _sentences("sea", 3),
        _sentences("cat", 3),
    ]


def test_coop_renames_of_raw_folder_names_match(tmp_path):
    path = _write(tmp_path / "d.json", {"airplane": ["a plane."], "face": ["a face."], "Annual Crop Land": ["fields."]})
    assert load_descriptions(path, ["airplanes", "Faces", "AnnualCrop"], 1) == [["a plane."], ["a face."], ["fields."]]


def test_exact_key_wins_over_tolerant_match(tmp_path):
    path = _write(tmp_path / "d.json", {"Face": ["upper."], "face": ["lower."]})
    assert load_descriptions(path, ["face", "Face"], 1) == [["lower."], ["upper."]]


def test_all_missing_classes_reported_once_with_close_matches(tmp_path):
    path = _write(tmp_path / "d.json", {"golden retriever": ["dog."], "siamese": ["cat."], "tabby": ["cat."]})
    with pytest.raises(DataError) as error:
        load_descriptions(path, ["golden_retriever", "siamese cat", "bengal", "tabby"], 1)
    message = str(error.value)
    assert str(path) in message and "2 of 4" in message
    assert "'siamese cat' (close: 'siamese')" in message
    assert "'bengal' (no close key)" in message
    assert "golden_retriever" not in message


def test_ambiguous_tolerant_match_is_reported(tmp_path):
    path = _write(tmp_path / "d.json", {"Sea Lake": ["a."], "sea_lake": ["b."]})
    with pytest.raises(DataError, match="ambiguous"):
        load_descriptions(path, ["SEA LAKE"], 1)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "not valid JSON"),
        ([["a", "b"]], "JSON list"),
        ({"cat": "a cat."}, "entry 'cat' is not a list of strings"),
        ({"cat": ["a cat.", 3]}, "entry 'cat' is not a list of strings"),
    ],
)
def test_malformed_files_name_the_file_and_the_expectation(tmp_path, content, fragment):
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(DataError) as error:
        load_descriptions(path, ["cat"], 1)
    assert fragment in str(error.value)
    assert str(path) in str(error.value)
    assert "mapping each class name to a list of sentences" in str(error.value)


def test_missing_file_points_to_download(tmp_path):
    with pytest.raises(DataError, match="anchoropt-descriptions-download"):
        load_descriptions(tmp_path / "absent.json", ["cat"], 1)


def test_short_lists_warn_naming_classes_and_empty_lists_fail(tmp_path):
    path = _write(tmp_path / "d.json", {"cat": ["one.", "two."], "dog": _sentences("dog", 5), "fish": ["  ", ""]})
    with pytest.warns(UserWarning, match=r"cat \(2\)"):
        loaded = load_descriptions(path, ["cat", "dog"], 4)
    assert loaded[0] == ["one.", "two."] and len(loaded[1]) == 4
    with pytest.raises(DataError, match="empty sentence list for: 'fish'"):
        load_descriptions(path, ["cat", "fish"], 1)


def test_long_sentences_are_kept_and_whitespace_stripped(tmp_path):
    long_sentence = "word " * 200
    path = _write(tmp_path / "d.json", {"cat": ["\n\n A cat. ", long_sentence]})
    assert load_descriptions(path, ["cat"], 2) == [["A cat.", long_sentence.strip()]]


def test_max_per_class_must_be_positive(tmp_path):
    path = _write(tmp_path / "d.json", {"cat": ["a."]})
    with pytest.raises(ConfigError, match="MAX_TEMPLATE_LENGTH"):
        load_descriptions(path, ["cat"], 0)


def test_default_paths_for_all_datasets_and_imagenet_variants(tmp_path):
    expected = {
        "ImageNet": "imagenet_prompts_full.json",
        "Caltech101": "cal_prompts_full.json",
        "OxfordPets": "pets_prompts_full.json",
        "StanfordCars": "cars_prompts_full.json",
        "OxfordFlowers": "flower_prompts_full.json",
        "Food101": "food_prompts_full.json",
        "FGVCAircraft": "airplane_prompts_full.json",
        "SUN397": "sun_prompts_full.json",
        "DescribableTextures": "texture_prompts_full.json",
        "EuroSAT": "eurosat_prompts_full.json",
        "UCF101": "ucf_prompts_full.json",
        "ImageNetV2": "imagenet_prompts_full.json",
        "ImageNetSketch": "imagenet_prompts_full.json",
        "ImageNetA": "imagenet_prompts_full.json",
        "imagenetr": "imagenet_prompts_full.json",
    }
    for dataset, file_name in expected.items():
        assert default_descriptions_path(dataset, tmp_path) == tmp_path / file_name
    assert default_descriptions_path("EuroSAT").parent.name == "descriptions"
    with pytest.raises(ConfigError, match="TRAINER.ANCHOROPT.DESCRIPTIONS"):
        default_descriptions_path("CIFAR10", tmp_path)


# ---------------------------------------------------------------- download command


def _fake_source(monkeypatch, dataset: str, data: bytes, num_classes: int = 2) -> DescriptionSource:
    source = DescriptionSource(
        f"{dataset.lower()}.json",
        num_classes,
        (f"https://one/{dataset}", f"https://two/{dataset}"),
        cli.git_blob_id(data),
    )
    monkeypatch.setitem(DESCRIPTION_SOURCES, dataset, source)
    return source


def test_git_blob_id_matches_git():
    assert (
        cli.git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    )  # `echo hello | git hash-object --stdin`


def test_download_verifies_and_installs_atomically(tmp_path, monkeypatch, capsys):
    good = json.dumps({"cat": ["a cat."], "dog": ["a dog."]}).encode()
    _fake_source(monkeypatch, "EuroSAT", good)
    requested = []
    monkeypatch.setattr(cli, "fetch_bytes", lambda url, timeout=60.0: requested.append(url) or good)
    assert cli.download_main(["--dest", str(tmp_path), "--datasets", "eurosat"]) == 0
    assert (tmp_path / "eurosat.json").read_bytes() == good
    assert requested == ["https://one/EuroSAT"]
    assert "installed" in capsys.readouterr().out
    assert [item.name for item in tmp_path.iterdir()] == ["eurosat.json"]

    # A second run verifies the file in place and downloads nothing.
    assert cli.download_main(["--dest", str(tmp_path), "--datasets", "EuroSAT"]) == 0
    assert requested == ["https://one/EuroSAT"]
    assert "verified" in capsys.readouterr().out


def test_download_falls_back_to_second_url_and_reports_failures(tmp_path, monkeypatch, capsys):
    good = json.dumps({"cat": ["a cat."], "dog": ["a dog."]}).encode()
    _fake_source(monkeypatch, "EuroSAT", good)
    _fake_source(monkeypatch, "UCF101", b"{}")

    def fetch(url, timeout=60.0):
        if url == "https://two/EuroSAT":
            return good
        raise cli.DescriptionServiceError(f"cannot reach {url}: offline")

    monkeypatch.setattr(cli, "fetch_bytes", fetch)
    assert cli.download_main(["--dest", str(tmp_path), "--datasets", "UCF101", "EuroSAT"]) == 2
    captured = capsys.readouterr()
    assert (tmp_path / "eurosat.json").read_bytes() == good
    assert not (tmp_path / "ucf101.json").exists()
    assert "FAILED" in captured.out and "https://one/UCF101: offline" in captured.out
    assert "1 of 2 description files not installed: UCF101" in captured.err


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b'{"cat": ["a."], "dog": ["b."]}', "differs from the published"),  # wrong bytes
        (b"<html>rate limited</html>", "not valid JSON"),
        (b'{"cat": ["a."]}', "1 classes, expected at least 2"),
        (b'{"cat": ["a."], "dog": []}', "classes without sentences: dog"),
    ],
)
def test_download_rejects_bad_content_and_keeps_existing_file(tmp_path, monkeypatch, capsys, payload, fragment):
    source = _fake_source(monkeypatch, "EuroSAT", payload)
    if fragment.startswith("differs"):
        monkeypatch.setitem(
            DESCRIPTION_SOURCES, "EuroSAT", DescriptionSource(source.file_name, 2, source.urls, "0" * 40)
        )
    existing = tmp_path / source.file_name
    existing.write_bytes(b"previous")
    monkeypatch.setattr(cli, "fetch_bytes", lambda url, timeout=60.0: payload)
    assert cli.download_main(["--dest", str(tmp_path), "--datasets", "EuroSAT", "--force"]) == 2
    assert fragment in capsys.readouterr().out
    assert existing.read_bytes() == b"previous"
    assert sorted(item.name for item in tmp_path.iterdir()) == [source.file_name]


def test_download_keeps_a_locally_edited_file_without_force(tmp_path, monkeypatch, capsys):
    source = _fake_source(monkeypatch, "EuroSAT", b'{"cat": ["a."], "dog": ["b."]}')
    (tmp_path / source.file_name).write_bytes(b'{"cat": ["mine."]}')
    monkeypatch.setattr(cli, "fetch_bytes", lambda url, timeout=60.0: pytest.fail("should not download"))
    assert cli.download_main(["--dest", str(tmp_path), "--datasets", "EuroSAT"]) == 0
    assert "kept" in capsys.readouterr().out
    assert (tmp_path / source.file_name).read_bytes() == b'{"cat": ["mine."]}'


def test_download_from_local_folder(tmp_path, monkeypatch):
    good = json.dumps({"cat": ["a cat."], "dog": ["a dog."]}).encode()
    source = _fake_source(monkeypatch, "OxfordPets", good)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / source.file_name).write_bytes(good)
    monkeypatch.setattr(cli, "fetch_bytes", lambda url, timeout=60.0: pytest.fail("should not download"))
    assert (
        cli.download_main(
            ["--dest", str(tmp_path / "out"), "--from-dir", str(tmp_path / "mirror"), "--datasets", "OxfordPets"]
        )
        == 0
    )
    assert (tmp_path / "out" / source.file_name).read_bytes() == good


def test_published_sources_cover_the_eleven_datasets_with_pinned_urls():
    assert len(DESCRIPTION_SOURCES) == 11
    for source in DESCRIPTION_SOURCES.values():
        assert len(source.git_blob) == 40
        assert all(
            url.startswith("https://raw.githubusercontent.com/") and url.endswith(source.file_name)
            for url in source.urls
        )


# ---------------------------------------------------------------- generate command


def _chat_answer(content: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def test_generate_writes_cupl_json_from_chat_answers(tmp_path, monkeypatch, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("# my classes\nred panda\n\nsnow_leopard\n", encoding="utf-8")
    calls = []

    def post(url, payload, headers, timeout=120.0):
        calls.append((url, payload, headers))
        name = payload["messages"][1]["content"].split('"')[1]
        return _chat_answer(
            f'1. A {name} has fur.\n2) "A {name} is seen in trees."\n- A {name} has fur.\n\n* A {name} has a long tail.'
        )

    monkeypatch.setattr(cli, "post_json", post)
    monkeypatch.setenv("MY_KEY", "secret")
    output = tmp_path / "out" / "animals.json"
    argv = [
        str(names),
        "--output",
        str(output),
        "--model",
        "m1",
        "--base-url",
        "http://llm.local/v1/",
        "--api-key-env",
        "MY_KEY",
        "--per-class",
        "3",
        "--category",
        "animal",
    ]
    assert cli.generate_main(argv) == 0
    written = json.loads(output.read_text())
    assert list(written) == ["red panda", "snow_leopard"]
    assert written["red panda"] == [
        "A red panda has fur.",
        "A red panda is seen in trees.",
        "A red panda has a long tail.",
    ]
    url, payload, headers = calls[0]
    assert url == "http://llm.local/v1/chat/completions"
    assert payload["model"] == "m1"
    assert payload["messages"][0]["content"] == cli.SYSTEM_PROMPT
    assert payload["messages"][1]["content"] == cli.build_prompt("red panda", 3, "animal")
    assert "(a type of animal)" in payload["messages"][1]["content"]
    assert headers == {"Authorization": "Bearer secret"}

    # Rerunning skips classes already written.
    calls.clear()
    assert cli.generate_main(argv) == 0
    assert calls == []


def test_generate_needs_the_api_key_variable(tmp_path, monkeypatch, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("cat\n", encoding="utf-8")
    monkeypatch.delenv("ABSENT_KEY", raising=False)
    assert (
        cli.generate_main(
            [str(names), "--output", str(tmp_path / "o.json"), "--model", "m", "--api-key-env", "ABSENT_KEY"]
        )
        == 2
    )
    assert "ABSENT_KEY is not set" in capsys.readouterr().err


def test_generate_retries_transient_errors_and_stops_on_client_errors(tmp_path, monkeypatch, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("cat\n", encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setattr(cli, "pause", lambda seconds: None)
    answers = [cli.DescriptionServiceError("HTTP 429", retryable=True), _chat_answer(""), _chat_answer("A cat purrs.")]

    def post(url, payload, headers, timeout=120.0):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(cli, "post_json", post)
    output = tmp_path / "o.json"
    assert cli.generate_main([str(names), "--output", str(output), "--model", "m", "--per-class", "2"]) == 0
    assert json.loads(output.read_text()) == {"cat": ["A cat purrs."]}
    assert "fewer than 2 sentences for: cat" in capsys.readouterr().err

    attempts = []

    def unauthorized(url, payload, headers, timeout=120.0):
        attempts.append(url)
        raise cli.DescriptionServiceError(f"{url} answered HTTP 401: bad key")

    monkeypatch.setattr(cli, "post_json", unauthorized)
    assert cli.generate_main([str(names), "--output", str(tmp_path / "o2.json"), "--model", "m"]) == 2
    assert len(attempts) == 1
    assert "HTTP 401" in capsys.readouterr().err


def test_readme_documents_the_prompt_used_by_the_code():
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert cli.SYSTEM_PROMPT in text
    assert cli.USER_PROMPT_TEMPLATE in text
