"""anchoropt-results on a hand-made tree of results files: arithmetic, missing seeds/datasets, formats, paper."""

import csv
import io
import json
import random
import statistics
from pathlib import Path

import pytest

from anchoropt.cli.errors import run_cli
from anchoropt.cli.results import main as results_main
from anchoropt.config import build_config
from anchoropt.results import paper
from anchoropt.results.record import RESULTS_FILE, SCHEMA, build_record
from anchoropt.results.render import render
from anchoropt.results.tables import ResultsError, build_report, find_results, load_report, read_result

DATASETS = paper.BASE2NEW_DATASETS
SEEDS = (1, 2, 3)


class Tree:
    """Writes results files in the scripts' layout and remembers every accuracy written."""

    def __init__(self, root):
        self.root = root
        self.acc = {}  # (protocol, trainer, dataset, subsample, seed) -> accuracy
        self.rng = random.Random(0)

    def add(
        self,
        protocol,
        trainer,
        dataset,
        subsample,
        seed,
        acc=None,
        config_name="vit_b16",
        num_shots=16,
        backbone="ViT-B/16",
        kind=None,
    ):
        acc = round(self.rng.uniform(20, 99), 4) if acc is None else acc
        folder = (
            self.root
            / protocol
            / (kind or subsample)
            / dataset
            / f"shots_{num_shots}"
            / trainer
            / config_name
            / f"seed{seed}"
        )
        folder.mkdir(parents=True)
        record = {
            "schema": SCHEMA,
            "protocol": protocol,
            "trainer": trainer,
            "dataset": dataset,
            "subsample": subsample,
            "split": "test",
            "num_shots": num_shots,
            "seed": seed,
            "backbone": backbone,
            "config_name": config_name,
            "metrics": {"accuracy": acc, "error_rate": 100 - acc, "macro_f1": acc / 2},
        }
        (folder / RESULTS_FILE).write_text(json.dumps(record))
        if config_name == "vit_b16" and num_shots == 16:
            self.acc[(protocol, trainer, dataset, subsample, seed)] = acc
        return folder / RESULTS_FILE

    def values(self, protocol, trainer, dataset, subsample):
        return [self.acc[k] for k in sorted(self.acc) if k[:4] == (protocol, trainer, dataset, subsample)]


def hm(b, n):
    return 2 * b * n / (b + n)


@pytest.fixture
def tree(tmp_path):
    t = Tree(tmp_path / "output")
    for trainer in ("ZeroshotCLIP", "CoOp", "CoOp_AnchorOPT"):
        for d in DATASETS:
            if trainer == "CoOp_AnchorOPT" and d == "EuroSAT":
                continue  # a missing dataset
            for s in SEEDS:
                t.add("base2new", trainer, d, "base", s)
                if not (trainer == "CoOp" and d == "DescribableTextures" and s == 3):  # a missing seed
                    t.add("base2new", trainer, d, "new", s)
    for trainer in ("ZeroshotCLIP", "CoOp"):
        for s in SEEDS:
            t.add("cross_dataset", trainer, "ImageNet", "all", s, kind="train")
            for d in paper.CROSS_DATASET_TARGETS:
                if not (trainer == "CoOp" and d == "DescribableTextures" and s == 2):
                    t.add("cross_dataset", trainer, d, "all", s, kind="test")
            for d in paper.DG_TARGETS:
                t.add("domain_generalization", trainer, d, "all", s, kind="test")
    return t


def as_json(root, *args):
    return json.loads(render(load_report(str(root), *args), "json", show_paper=True))


def method(data, protocol, label):
    (m,) = [m for m in data[protocol] if m["method"] == label]
    return m


def test_base2new_arithmetic_and_complete_average(tree):
    data = as_json(tree.root)
    assert [m["method"] for m in data["base2new"]] == ["ZeroshotCLIP", "CoOp", "CoOp_AnchorOPT"]
    zs = method(data, "base2new", "ZeroshotCLIP")
    base_means, novel_means = [], []
    for row in zs["datasets"]:
        b = tree.values("base2new", "ZeroshotCLIP", row["dataset"], "base")
        n = tree.values("base2new", "ZeroshotCLIP", row["dataset"], "new")
        assert row["base"]["mean"] == pytest.approx(statistics.mean(b))
        assert row["base"]["std"] == pytest.approx(statistics.pstdev(b))
        assert row["novel"]["mean"] == pytest.approx(statistics.mean(n))
        assert row["hm"] == pytest.approx(hm(statistics.mean(b), statistics.mean(n)))
        assert row["complete"]
        base_means.append(statistics.mean(b))
        novel_means.append(statistics.mean(n))
    avg = zs["average"]
    assert avg["complete"] and avg["datasets_complete"] == 11
    assert avg["base"] == pytest.approx(statistics.mean(base_means))
    assert avg["novel"] == pytest.approx(statistics.mean(novel_means))
    # HM of the mean Base and mean Novel, not the mean of the per-dataset HMs
    assert avg["hm"] == pytest.approx(hm(statistics.mean(base_means), statistics.mean(novel_means)))
    assert avg["hm"] != pytest.approx(statistics.mean(r["hm"] for r in zs["datasets"]))


def test_missing_seed_and_dataset_are_shown_never_averaged(tree):
    data = as_json(tree.root)
    coop = method(data, "base2new", "CoOp")
    dtd = [r for r in coop["datasets"] if r["dataset"] == "DescribableTextures"][0]
    assert dtd["novel"]["seeds"] == [1, 2] and dtd["novel"]["missing_seeds"] == [3]
    assert not dtd["novel"]["complete"] and not dtd["complete"]
    dtd_novel = tree.values("base2new", "CoOp", "DescribableTextures", "new")
    assert dtd["novel"]["mean"] == pytest.approx(statistics.mean(dtd_novel))
    assert coop["average"] == {**coop["average"], "complete": False, "base": None, "hm": None, "datasets_complete": 10}
    anchor = method(data, "base2new", "CoOp_AnchorOPT")
    eurosat = [r for r in anchor["datasets"] if r["dataset"] == "EuroSAT"][0]
    assert eurosat["base"] is None and eurosat["novel"] is None and eurosat["hm"] is None
    assert anchor["average"]["complete"] is False and anchor["average"]["novel"] is None

    text = render(load_report(str(tree.root)), "text")
    lines = {line.split("  ")[0]: line for line in text.splitlines()}
    n = tree.values("base2new", "CoOp", "DescribableTextures", "new")
    b = tree.values("base2new", "CoOp", "DescribableTextures", "base")
    partial = f"{statistics.mean(b):.2f} / {statistics.mean(n):.2f} / {hm(statistics.mean(b), statistics.mean(n)):.2f}"
    assert f"{partial} [2/3 seeds]" in lines["DTD"]
    assert "missing" in lines["EuroSAT"]  # CoOp_AnchorOPT has no EuroSAT run; the others have one
    assert "not run" not in text
    assert lines["Average (11)"].count("incomplete (10/11)") == 2  # CoOp and CoOp_AnchorOPT
    zs = method(data, "base2new", "ZeroshotCLIP")["average"]
    assert f"{zs['base']:.2f}" in lines["Average (11)"] and f"{zs['hm']:.2f}" in lines["Average (11)"]


def test_side_by_side_text_row_holds_every_method(tree):
    text = render(load_report(str(tree.root)), "text")
    header = [line for line in text.splitlines() if line.startswith("Dataset")][0]
    assert header.split() == ["Dataset", "ZeroshotCLIP", "CoOp", "CoOp_AnchorOPT"]  # one column per group
    row = [line for line in text.splitlines() if line.startswith("Caltech101")][0]
    expected = []
    for trainer in ("ZeroshotCLIP", "CoOp", "CoOp_AnchorOPT"):
        b = statistics.mean(tree.values("base2new", trainer, "Caltech101", "base"))
        n = statistics.mean(tree.values("base2new", trainer, "Caltech101", "new"))
        expected += [f"{b:.2f}", "/", f"{n:.2f}", "/", f"{hm(b, n):.2f}"]
    assert row.split() == ["Caltech101"] + expected


def test_cross_dataset_and_dg_tables(tree):
    data = as_json(tree.root)
    zs = method(data, "cross_dataset", "ZeroshotCLIP")
    assert [e["dataset"] for e in zs["datasets"]] == ["ImageNet", *paper.CROSS_DATASET_TARGETS]
    src = tree.values("cross_dataset", "ZeroshotCLIP", "ImageNet", "all")
    assert zs["datasets"][0]["role"] == "source"
    assert zs["datasets"][0]["accuracy"]["mean"] == pytest.approx(statistics.mean(src))
    target_means = [
        statistics.mean(tree.values("cross_dataset", "ZeroshotCLIP", d, "all")) for d in paper.CROSS_DATASET_TARGETS
    ]
    assert zs["average"]["accuracy"] == pytest.approx(statistics.mean(target_means))  # source not in the average
    coop = method(data, "cross_dataset", "CoOp")
    assert coop["average"]["accuracy"] is None and coop["average"]["datasets_complete"] == 9
    dg = method(data, "domain_generalization", "CoOp")
    assert dg["datasets"][0]["dataset"] == "ImageNet"  # the source column comes from the cross-dataset run
    source = tree.values("cross_dataset", "CoOp", "ImageNet", "all")
    assert dg["datasets"][0]["accuracy"]["mean"] == pytest.approx(statistics.mean(source))
    dg_means = [statistics.mean(tree.values("domain_generalization", "CoOp", d, "all")) for d in paper.DG_TARGETS]
    assert dg["average"]["accuracy"] == pytest.approx(statistics.mean(dg_means))
    text = render(load_report(str(tree.root)), "text")
    assert "incomplete (9/10)" in [line for line in text.splitlines() if line.startswith("CoOp ")][0]


def test_paper_numbers_and_differences(tree):
    data = as_json(tree.root)
    coop = method(data, "base2new", "CoOp")
    imagenet = coop["datasets"][0]
    ours = statistics.mean(tree.values("base2new", "CoOp", "ImageNet", "base"))
    assert imagenet["paper"] == {"base": 76.47, "novel": 67.88, "hm": 71.92}
    assert imagenet["diff"]["base"] == pytest.approx(ours - 76.47)
    zs = method(data, "base2new", "ZeroshotCLIP")
    assert zs["average"]["paper"] == {"base": 69.34, "novel": 74.22, "hm": 71.70}
    assert zs["average"]["diff"]["hm"] == pytest.approx(zs["average"]["hm"] - 71.70)
    assert coop["average"]["paper"]["hm"] == 71.66 and coop["average"]["diff"]["hm"] is None  # ours incomplete
    assert method(data, "base2new", "CoOp_AnchorOPT")["datasets"][0]["paper"] is None  # not published per dataset
    xd = method(data, "cross_dataset", "CoOp")
    assert xd["datasets"][1]["paper"] == 93.70 and xd["average"]["paper"] == 63.88
    text = render(load_report(str(tree.root)), "text", show_paper=True)
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("ImageNet "))
    assert lines[i + 1].startswith("↳ paper") and "76.47" in lines[i + 1]
    assert lines[i + 2].startswith("↳ Δ") and f"{ours - 76.47:+.2f}" in lines[i + 2]


def test_paper_numbers_only_for_comparable_settings(tmp_path):
    t = Tree(tmp_path)
    t.add("base2new", "CoOp", "ImageNet", "base", 1, num_shots=4)
    data = as_json(tmp_path, (1,))
    assert data["base2new"][0]["datasets"][0]["paper"] is None


def test_formats_parse_and_agree(tree):
    report = load_report(str(tree.root))
    rows = list(csv.DictReader(io.StringIO(render(report, "csv", show_paper=True))))
    per_method = {"base2new": 11 * 3 + 3, "cross_dataset": 11 + 1, "domain_generalization": 5 + 1}
    for protocol, n in per_method.items():
        methods = {r["method"] for r in rows if r["protocol"] == protocol}
        assert len([r for r in rows if r["protocol"] == protocol]) == n * len(methods)
    (cell,) = [
        r
        for r in rows
        if (r["protocol"], r["method"], r["dataset"], r["metric"]) == ("base2new", "CoOp", "OxfordPets", "novel")
    ]
    values = tree.values("base2new", "CoOp", "OxfordPets", "new")
    assert float(cell["mean"]) == pytest.approx(statistics.mean(values))
    assert (cell["seeds_present"], cell["complete"], cell["paper"]) == ("3", "True", "95.29")
    (missing,) = [r for r in rows if (r["method"], r["dataset"], r["metric"]) == ("CoOp_AnchorOPT", "EuroSAT", "base")]
    assert (missing["mean"], missing["seeds_present"], missing["complete"]) == ("", "0", "False")
    markdown = render(report, "markdown")
    assert "| Dataset" in markdown and "|--" in markdown


def test_seeds_outside_the_expected_ones_are_ignored_with_a_warning(tree):
    tree.add("base2new", "ZeroshotCLIP", "ImageNet", "base", 4, acc=0.0)
    report = load_report(str(tree.root))
    assert any("seeds 4" in w for w in report.warnings)
    row = report.base2new[0].rows[0]
    assert row.base.seeds == [1, 2, 3]
    with_4 = load_report(str(tree.root), (1, 2, 3, 4))
    assert with_4.base2new[0].rows[0].base.seeds == [1, 2, 3, 4]
    assert not with_4.base2new[0].average.complete  # every other dataset lacks seed 4


def test_duplicate_results_are_an_error_naming_both_files(tmp_path):
    t = Tree(tmp_path)
    first = t.add("base2new", "CoOp", "ImageNet", "base", 1)
    second = t.add("base2new", "CoOp", "ImageNet", "base", 1, kind="copy")
    with pytest.raises(ResultsError) as e:
        load_report(str(tmp_path))
    assert str(first) in str(e.value) and str(second) in str(e.value)


def test_settings_of_one_trainer_get_distinct_labels(tmp_path):
    t = Tree(tmp_path)
    t.add("base2new", "CoOp", "ImageNet", "base", 1)
    t.add("base2new", "CoOp", "ImageNet", "base", 1, config_name="vit_b16_ep50")
    labels = [m.label for m in load_report(str(tmp_path), (1,)).base2new]
    assert labels == ["CoOp (vit_b16)", "CoOp (vit_b16_ep50)"]


def test_unusable_files_are_reported_not_tabulated(tree):
    broken = tree.root / "broken" / RESULTS_FILE
    broken.parent.mkdir()
    broken.write_text("{not json")
    foreign = tree.root / "foreign" / RESULTS_FILE
    foreign.parent.mkdir()
    foreign.write_text(json.dumps({"accuracy": 1}))
    no_protocol = tree.add("", "CoOp", "ImageNet", "base", 1, kind="by_hand")
    results, warnings = find_results(str(tree.root))
    assert any(str(broken) in w for w in warnings) and any(str(foreign) in w for w in warnings)
    report = build_report(results, warnings=warnings)
    assert any(str(no_protocol) in w and "RUN.PROTOCOL" in w for w in report.warnings)


def test_reads_records_written_by_the_trainers(tmp_path):
    cfg = build_config(
        opts=[
            "TRAINER.NAME",
            "CoOp",
            "DATASET.NAME",
            "OxfordPets",
            "DATASET.SUBSAMPLE_CLASSES",
            "new",
            "SEED",
            "2",
            "RUN.PROTOCOL",
            "base2new",
            "RUN.CONFIG_FILE",
            "configs/trainers/CoOp/vit_b16.yaml",
        ]
    )
    record = build_record(
        cfg,
        "test",
        {"accuracy": 61.25, "error_rate": 38.75, "macro_f1": 60.0},
        engine="builtin",
        num_classes=2,
        num_samples=6,
        wall_time_s=1.0,
    )
    path = tmp_path / RESULTS_FILE
    path.write_text(json.dumps(record))
    r = read_result(str(path))
    assert (r.protocol, r.method.trainer, r.method.config_name, r.dataset, r.subsample, r.seed, r.accuracy) == (
        "base2new",
        "CoOp",
        "vit_b16",
        "OxfordPets",
        "new",
        2,
        61.25,
    )


def test_published_numbers_are_self_consistent():
    for rows in paper.BASE2NEW_PER_DATASET.values():
        for r in rows.values():
            assert hm(r.base, r.novel) == pytest.approx(r.hm, abs=0.006)
    for name, rows in paper.BASE2NEW_PER_DATASET.items():
        b = statistics.mean(r.base for r in rows.values())
        n = statistics.mean(r.novel for r in rows.values())
        assert (b, n) == pytest.approx(paper.BASE2NEW_AVERAGE[name][:2], abs=0.006)
    for r in paper.BASE2NEW_AVERAGE.values():
        assert hm(r.base, r.novel) == pytest.approx(r.hm, abs=0.006)
    for table, targets in (
        (paper.CROSS_DATASET, paper.CROSS_DATASET_TARGETS),
        (paper.DOMAIN_GENERALIZATION, paper.DG_TARGETS),
    ):
        for row in table.values():
            assert statistics.mean(row[d] for d in targets) == pytest.approx(row[paper.AVERAGE], abs=0.006)


def test_cli_formats_and_errors(tree, tmp_path, capsys):
    assert results_main([str(tree.root), "--format", "json", "--paper"]) == 0
    assert json.loads(capsys.readouterr().out)["base2new"][0]["method"] == "ZeroshotCLIP"
    assert results_main([str(tree.root), "--format", "csv"]) == 0
    assert next(csv.reader(io.StringIO(capsys.readouterr().out)))[:3] == ["protocol", "method", "trainer"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(results_main)([str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: No results.json files under") and len(err.splitlines()) == 1


# ---- groups: trainer, backbone, config ---------------------------------------------------------
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write_run(root, trainer, dataset, subsample, seed, acc, opts=(), backbone="ViT-B/16", folder="runs", model=None):
    """A results file as train.py writes it, from the shipped config files (base2new layer included)."""
    files = [CONFIGS / "trainers" / trainer / "vit_b16.yaml"]
    layer = CONFIGS / "trainers" / trainer / "base2new" / f"{dataset}.yaml"
    files += [layer] if layer.is_file() else []
    out = root / folder / dataset / subsample / trainer / f"seed{seed}"
    cfg = build_config(
        str(CONFIGS / "datasets" / f"{dataset}.yaml"),
        [str(f) for f in files],
        [*opts, "DATASET.SUBSAMPLE_CLASSES", subsample, "SEED", str(seed), "RUN.PROTOCOL", "base2new"],
        {
            "TRAINER.NAME": trainer,
            "OUTPUT_DIR": str(out),
            "RUN.CONFIG_FILE": ",".join(map(str, files)),
            "RUN.DATASET_CONFIG_FILE": str(CONFIGS / "datasets" / f"{dataset}.yaml"),
            "DATASET.NUM_SHOTS": 16,
        },
    )
    identity = {"label": backbone, "name": backbone if backbone == "ViT-B/16" else None}
    record = build_record(
        cfg,
        "test",
        {"accuracy": acc},
        engine="builtin",
        num_classes=2,
        num_samples=6,
        wall_time_s=1.0,
        extra={"backbone": backbone, "backbone_identity": identity, **({"model": model} if model else {})},
    )
    out.mkdir(parents=True)
    (out / RESULTS_FILE).write_text(json.dumps(record))
    return cfg


def test_runs_of_other_settings_are_another_group_marked_with_the_differing_keys(tmp_path):
    shipped_epochs = build_config(
        str(CONFIGS / "datasets/oxford_pets.yaml"), [str(CONFIGS / "trainers/CoOp/vit_b16.yaml")]
    ).OPTIM.MAX_EPOCH
    write_run(tmp_path, "CoOp", "oxford_pets", "base", 1, 70.0)
    write_run(tmp_path, "CoOp", "oxford_pets", "new", 1, 60.0)
    train_cfg = write_run(tmp_path, "CoOp", "oxford_pets", "base", 1, 80.0, ["OPTIM.MAX_EPOCH", "3"], folder="ab")
    # The evaluation was given no OPTIM option; it is judged by the model it loaded (the MAX_EPOCH 3 run).
    from anchoropt.runs.identity import run_identity

    identity = run_identity(train_cfg)
    model = {"fingerprint": identity["fingerprint"], "config": identity["config"], "load_epoch": 3}
    model.update(config_files=train_cfg.RUN.CONFIG_FILE, dataset_config_file=train_cfg.RUN.DATASET_CONFIG_FILE)
    write_run(tmp_path, "CoOp", "oxford_pets", "new", 1, 50.0, folder="ab", model=model)

    data = as_json(tmp_path, (1,))
    groups = {m["method"]: m for m in data["base2new"]}
    assert set(groups) == {"CoOp", "CoOp [1]"}
    assert groups["CoOp"]["shipped_config"] and groups["CoOp"]["variant"] == []
    assert groups["CoOp [1]"]["variant"] == ["OPTIM.MAX_EPOCH=3"] and not groups["CoOp [1]"]["shipped_config"]
    pets = {label: [r for r in m["datasets"] if r["dataset"] == "OxfordPets"][0] for label, m in groups.items()}
    assert (pets["CoOp"]["base"]["mean"], pets["CoOp"]["novel"]["mean"]) == (70.0, 60.0)  # never mixed
    assert (pets["CoOp [1]"]["base"]["mean"], pets["CoOp [1]"]["novel"]["mean"]) == (80.0, 50.0)
    assert data["footnotes"] == {"[1]": f"CoOp: OPTIM.MAX_EPOCH=3 (shipped: {shipped_epochs})"}

    text = render(load_report(str(tmp_path), (1,)), "text")
    header = [line for line in text.splitlines() if line.startswith("Dataset")][0]
    assert header.split() == ["Dataset", "CoOp", "CoOp", "[1]"]
    assert f"[1] CoOp: OPTIM.MAX_EPOCH=3 (shipped: {shipped_epochs})" in text.splitlines()
    row = [line for line in text.splitlines() if line.startswith("OxfordPets")][0]
    assert row.split()[1:] == [
        "70.00",
        "/",
        "60.00",
        "/",
        f"{hm(70, 60):.2f}",
        "80.00",
        "/",
        "50.00",
        "/",
        f"{hm(80, 50):.2f}",
    ]


def test_filters_and_the_not_run_line(tmp_path, capsys):
    write_run(tmp_path, "CoOp", "oxford_pets", "base", 1, 70.0)
    write_run(tmp_path, "CoOp", "dtd", "base", 1, 71.0)
    write_run(tmp_path, "ZeroshotCLIP", "oxford_pets", "base", 1, 72.0)
    write_run(tmp_path, "CoOp", "eurosat", "base", 1, 73.0, backbone="tiny.pt@1234abcd", folder="other")

    def table(*args):
        capsys.readouterr()
        assert results_main([str(tmp_path), "--seeds", "1", *args]) == 0
        return capsys.readouterr().out

    text = table()
    assert [line for line in text.splitlines() if line.startswith("Dataset")][0].split() == [
        "Dataset",
        "ZeroshotCLIP",
        "(ViT-B/16)",
        "CoOp",
        "(ViT-B/16)",
        "CoOp",
        "(tiny.pt@1234abcd)",
    ]
    not_run = [line for line in text.splitlines() if line.startswith("not run: ")]
    assert not_run == ["not run: ImageNet, Caltech101, StanfordCars, Flowers102, Food101, FGVCAircraft, SUN397, UCF101"]
    assert not any(line.startswith(("ImageNet ", "UCF101")) for line in text.splitlines())

    data = json.loads(table("--trainers", "CoOp", "--format", "json"))
    assert {(m["trainer"], m["backbone"]) for m in data["base2new"]} == {
        ("CoOp", "ViT-B/16"),
        ("CoOp", "tiny.pt@1234abcd"),
    }
    data = json.loads(table("--datasets", "oxford_pets", "DTD", "--format", "json"))
    found = {(m["trainer"], r["dataset"]) for m in data["base2new"] for r in m["datasets"] if r["base"]}
    assert found == {("CoOp", "OxfordPets"), ("CoOp", "DescribableTextures"), ("ZeroshotCLIP", "OxfordPets")}
    text = table("--backbone", "ViT-B/16")
    assert "tiny.pt" not in text and "EuroSAT" in [line for line in text.splitlines() if line.startswith("not run")][0]
    # --paper keeps every dataset row (the published numbers are beside them) and no "not run" line
    text = table("--paper", "--trainers", "CoOp")
    assert "not run" not in text and any(line.startswith("ImageNet ") for line in text.splitlines())

    assert run_cli(results_main)([str(tmp_path), "--backbone", "ViT-L/14"]) == 2
    err = capsys.readouterr().err
    assert "match the filters" in err and "CoOp on tiny.pt@1234abcd" in err


def test_published_numbers_only_beside_the_papers_backbone(tmp_path):
    write_run(tmp_path, "CoOp", "imagenet", "base", 1, 70.0)
    write_run(tmp_path, "CoOp", "imagenet", "base", 1, 71.0, backbone="ViT-B-16.pt@1234abcd", folder="named")
    data = as_json(tmp_path, (1,))
    rows = {m["backbone"]: m["datasets"][0] for m in data["base2new"]}
    assert rows["ViT-B/16"]["paper"] == {"base": 76.47, "novel": 67.88, "hm": 71.92}
    assert rows["ViT-B-16.pt@1234abcd"]["paper"] is None


def test_older_records_naming_a_weights_file_are_not_taken_for_their_backbone_name(tmp_path):
    path = tmp_path / RESULTS_FILE
    cfg = build_config(opts=["MODEL.BACKBONE.NAME", "ViT-B/16", "MODEL.BACKBONE.PATH", "/w/other_clip.pt"])
    record = build_record(
        cfg, "test", {"accuracy": 1.0}, engine="builtin", num_classes=1, num_samples=1, wall_time_s=0.0
    )
    assert record["backbone"] == "ViT-B/16"  # what such a record says; without backbone_identity it is not trusted
    path.write_text(json.dumps(record))
    assert read_result(str(path)).method.backbone == "other_clip.pt (file, unverified)"


def test_toy_world_runs_get_a_table_of_the_world_datasets_and_a_filter_narrows_the_rows_and_average(tmp_path):
    from anchoropt.toyworld import spec

    world = [d.name for d in spec.BASE2NEW_DATASETS]
    t = Tree(tmp_path / "output")
    for d in world:
        for s in SEEDS:
            for sub in ("base", "new"):
                t.add("base2new", "CoOp", d, sub, s)
    mean = {(d, sub): statistics.mean(t.values("base2new", "CoOp", d, sub)) for d in world for sub in ("base", "new")}
    (table,) = as_json(t.root)["base2new"]
    assert [r["dataset"] for r in table["datasets"]] == world  # not the paper's 11 "not run"
    base, new = (statistics.mean(mean[d, sub] for d in world) for sub in ("base", "new"))
    assert table["average"]["hm"] == pytest.approx(hm(base, new))
    text = render(load_report(str(t.root)), "text", show_paper=True)
    assert "not run" not in text and f"Average ({len(world)})" in text and "ImageNet" not in text
    # --datasets: only those rows, averaged over them alone; the paper's 11-dataset average is not put beside it
    (one,) = as_json(t.root, SEEDS, (), ["toy_net"])["base2new"]
    assert [r["dataset"] for r in one["datasets"]] == ["ToyNet"]
    assert one["average"]["hm"] == pytest.approx(hm(mean["ToyNet", "base"], mean["ToyNet", "new"]))
    t.add("base2new", "CoOp", "OxfordPets", "base", 1)
    t.add("base2new", "CoOp", "OxfordPets", "new", 1)
    paper_rows = render(load_report(str(t.root), SEEDS, (), ["oxford_pets"]), "text", show_paper=True)
    assert "Average (1)" in paper_rows and paper_rows.count("↳ paper") == 1  # the OxfordPets row's, not the average's
    mixed = as_json(t.root)["base2new"][0]["datasets"]  # real and world results together: the paper's 11 first
    assert [r["dataset"] for r in mixed][: len(DATASETS)] == list(DATASETS)


def test_transfer_titles_name_their_source_and_average_over_their_own_targets(tree):
    from anchoropt.toyworld import spec

    for s in SEEDS:  # the toy world's transfer runs beside the tree's ImageNet ones
        tree.add("cross_dataset", "CoOp", spec.SOURCE.name, "all", s, kind="train")
        for d in spec.TARGETS:
            tree.add("cross_dataset", "CoOp", d.name, "all", s, kind="test")
        for d in spec.VARIANTS:
            tree.add("domain_generalization", "CoOp", d.name, "all", s, kind="test")
        tree.add("cross_dataset", "AnchorOPT_StageI", spec.SOURCE.name, "all", s, kind="train")  # source only
    data = as_json(tree.root)
    assert [m["trainer"] for m in data["cross_dataset"]] == ["ZeroshotCLIP", "CoOp", "CoOp"]  # no Stage I row
    text = render(load_report(str(tree.root)), "markdown", show_paper=False)
    titles = [line for line in text.splitlines() if line.startswith(("Cross-dataset", "Domain generalisation"))]
    expected = [
        ("trained on ImageNet", f"the {len(paper.CROSS_DATASET_TARGETS)} targets"),
        (f"trained on {spec.SOURCE.name}", f"the {len(spec.TARGETS)} targets"),
        ("cross-dataset ImageNet model", f"the {len(paper.DG_TARGETS)} ImageNet variants"),
        (f"cross-dataset {spec.SOURCE.name} model", f"the {len(spec.VARIANTS)} {spec.SOURCE.name} variants"),
    ]
    assert len(titles) == len(expected)
    for title, (source, average) in zip(titles, expected):
        assert source in title and f"mean over {average}" in title, title
