"""The protocol tables, built from results files: base-to-novel, cross-dataset, domain generalisation.

Per dataset: mean and population standard deviation over the expected seeds
(CoOp's ``parse_test_res`` convention). Base-to-novel HM = 2BN/(B+N) of the
mean Base and mean Novel; the 11-dataset average is the HM of the mean Base
and mean Novel over datasets and exists only when every dataset has every
seed; the same rule holds for the cross-dataset and DG averages. Missing
seeds and datasets stay visible (``SeedStats.complete``, ``*.complete``).
Rendering lives in ``anchoropt.results.render``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from anchoropt.errors import UserError
from anchoropt.results import paper
from anchoropt.results.record import RESULTS_FILE, SCHEMA
from anchoropt.results.shipped import deviations
from anchoropt.runs.identity import flat_config, is_replaced, is_result_key, show_value

BASE2NEW = "base2new"
CROSS_DATASET = "cross_dataset"
DOMAIN_GENERALIZATION = "domain_generalization"
PROTOCOLS = (BASE2NEW, CROSS_DATASET, DOMAIN_GENERALIZATION)
DEFAULT_SEEDS = (1, 2, 3)
PAPER_SHOTS = 16
PAPER_BACKBONE = "ViT-B/16"


class ResultsError(UserError):
    """A results file cannot be used for the tables."""


#: A group's mark when its config files are not this checkout's (nothing to compare its settings with).
CUSTOM_CONFIG = "config files not in this checkout's configs/"


@dataclass(frozen=True, order=True)
class Method:
    """What one table column (or row) is about: a trainer with one setting on one backbone.

    ``variant``: how the group's config differs from the shipped config (``KEY=value`` each, see
    `anchoropt.results.shipped`); empty for runs of the shipped config. Runs of one trainer that differ in
    any of these fields are different groups, so they never share a cell.
    """

    trainer: str
    config_name: str
    num_shots: int
    backbone: str
    variant: tuple[str, ...] = ()

    @property
    def comparable_to_paper(self) -> bool:
        return self.num_shots == PAPER_SHOTS and self.backbone == PAPER_BACKBONE

    @property
    def shipped(self) -> bool:
        return not self.variant


@dataclass(frozen=True)
class Result:
    """The facts the tables need from one results file."""

    path: str
    protocol: str
    method: Method
    dataset: str
    subsample: str
    seed: int
    accuracy: float
    fingerprint: str = ""
    shipped_values: tuple[tuple[str, str], ...] = ()  # (KEY, shipped value) of each deviation in the variant
    dataset_file: str = ""  # the dataset config's name (oxford_pets), as the scripts name the dataset

    @property
    def dataset_names(self) -> set[str]:
        """The names ``--datasets`` accepts for this result's dataset (compared by `_dataset_key`)."""
        names = {self.dataset, paper.dataset_label(self.dataset), self.dataset_file}
        return {_dataset_key(n) for n in names if n}


# ---- reading ---------------------------------------------------------------------------------
def read_result(path: str) -> Result:
    """Parse one results file; raise ``ResultsError`` naming the file when it is not one of ours."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(record, dict) or not str(record.get("schema", "")).startswith(SCHEMA.split("/")[0]):
        raise ResultsError(f'{path}: not an anchoropt results file (expected "schema": "{SCHEMA}")')
    try:
        variant, shipped_values = _variant(record)
        method = Method(
            str(record["trainer"]),
            str(record.get("config_name", "")),
            int(record["num_shots"]),
            _backbone_label(record),
            variant,
        )
        return Result(
            path=path,
            protocol=str(record.get("protocol") or ""),
            method=method,
            dataset=str(record["dataset"]),
            subsample=str(record["subsample"]),
            seed=int(record["seed"]),
            accuracy=float(record["metrics"]["accuracy"]),
            fingerprint=str(record.get("fingerprint") or ""),
            shipped_values=shipped_values,
            dataset_file=os.path.splitext(os.path.basename(str(record.get("dataset_config_file") or "")))[0],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ResultsError(f"{path}: missing or malformed field {e}") from None


def _record_config(record: Mapping) -> dict:
    import yaml

    try:
        config = yaml.safe_load(record.get("config") or "")
    except yaml.YAMLError:
        return {}
    return flat_config(config) if isinstance(config, dict) else {}


def _backbone_label(record: Mapping) -> str:
    """What was loaded (``backbone_identity``); a file named in an older record's config is marked unverified."""
    identity = record.get("backbone_identity")
    if isinstance(identity, Mapping) and identity.get("label"):
        return str(identity["label"])
    path = _record_config(record).get("MODEL.BACKBONE.PATH") if "config" in record else ""
    if path:
        return f"{os.path.basename(str(path))} (file, unverified)"
    return str(record["backbone"])


def _variant(record: Mapping) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """How the training run behind ``record`` differs from its shipped config (``KEY=value`` each)."""
    if "config" not in record:
        return (), ()
    model = record.get("model") if isinstance(record.get("model"), Mapping) else None
    if model and isinstance(model.get("config"), Mapping):  # an evaluation: judged by the model it loaded
        config, files, dataset_file = model["config"], model.get("config_files", ""), model.get("dataset_config_file")
    else:
        flat = _record_config(record)
        config = {k: v for k, v in flat.items() if is_result_key(k, str(flat.get("TRAINER.NAME", "")))}
        files, dataset_file = record.get("config_file", ""), record.get("dataset_config_file", "")
    found = deviations(config, files, dataset_file or "")
    if found is None:
        return (CUSTOM_CONFIG,), ()
    variant = tuple(f"{key}={show_value(value)}" for key, value, _ in found)
    return variant, tuple((key, show_value(shipped)) for key, _, shipped in found)


def find_results(root: str) -> tuple[list[Result], list[str]]:
    """Every ``results.json`` under ``root`` (sorted by path), and a warning for each file skipped."""
    if not os.path.isdir(root):
        raise ResultsError(f"Not a directory: {root}")
    results, warnings = [], []
    replaced = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if is_replaced(os.path.relpath(dirpath, root)):
            replaced += RESULTS_FILE in filenames
            continue
        if RESULTS_FILE in filenames:
            path = os.path.join(dirpath, RESULTS_FILE)
            try:
                results.append(read_result(path))
            except ResultsError as e:
                warnings.append(f"skipped {e}")
    if replaced:
        warnings.append(f"left out {replaced} results file(s) of runs moved aside by OVERWRITE (*.replaced-<n>)")
    return results, warnings


# ---- statistics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedStats:
    """Accuracies of one cell by seed, against the seeds expected."""

    values: Mapping[int, float]
    expected: tuple[int, ...]

    @property
    def seeds(self) -> list[int]:
        return sorted(self.values)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values.values()) / self.n

    @property
    def std(self) -> float:
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values.values()) / self.n)

    @property
    def missing_seeds(self) -> list[int]:
        return [s for s in self.expected if s not in self.values]

    @property
    def complete(self) -> bool:
        return not self.missing_seeds


def seed_stats(values: Mapping[int, float], expected: Sequence[int]) -> Optional[SeedStats]:
    """``None`` when there is no value at all (a missing cell)."""
    return SeedStats(dict(values), tuple(expected)) if values else None


def harmonic_mean(base: float, novel: float) -> float:
    return 2 * base * novel / (base + novel) if base + novel else 0.0


def _complete(stats: Optional[SeedStats]) -> bool:
    return stats is not None and stats.complete


# ---- tables ----------------------------------------------------------------------------------
@dataclass
class Base2NewRow:
    dataset: str
    base: Optional[SeedStats]
    novel: Optional[SeedStats]

    @property
    def hm(self) -> Optional[float]:
        if self.base is None or self.novel is None:
            return None
        return harmonic_mean(self.base.mean, self.novel.mean)

    @property
    def complete(self) -> bool:
        return _complete(self.base) and _complete(self.novel)


@dataclass
class Base2NewAverage:
    datasets_complete: int
    datasets_total: int
    base: Optional[float] = None  # set only when every dataset is complete
    novel: Optional[float] = None

    @property
    def complete(self) -> bool:
        return self.base is not None

    @property
    def hm(self) -> Optional[float]:
        return harmonic_mean(self.base, self.novel) if self.complete else None


@dataclass
class Base2NewTable:
    method: Method
    label: str
    rows: list[Base2NewRow]
    average: Base2NewAverage


@dataclass
class TransferTable:
    """One method's cross-dataset or DG row: the source accuracy, each target, and the targets' average."""

    method: Method
    label: str
    source: Optional[SeedStats]
    targets: dict[str, Optional[SeedStats]]
    source_dataset: str = paper.SOURCE_DATASET  # ImageNet, or another source (the toy world's ToyNet)

    @property
    def datasets_complete(self) -> int:
        return sum(_complete(s) for s in self.targets.values())

    @property
    def average(self) -> Optional[float]:
        """Mean over targets of the per-target mean; only when every target has every seed."""
        if self.datasets_complete != len(self.targets):
            return None
        return sum(s.mean for s in self.targets.values()) / len(self.targets)


@dataclass
class Report:
    seeds: tuple[int, ...]
    base2new: list[Base2NewTable] = field(default_factory=list)
    cross_dataset: list[TransferTable] = field(default_factory=list)
    domain_generalization: list[TransferTable] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The base-to-novel table's datasets (its rows, besides extra ones, and what its average is over).
    base2new_datasets: tuple[str, ...] = paper.BASE2NEW_DATASETS
    #: Groups whose config differs from the shipped one: method -> (marker, "KEY=value (shipped: v), ...").
    footnotes: dict[Method, tuple[str, str]] = field(default_factory=dict)

    @property
    def methods(self) -> list[Method]:
        return [t.method for t in (*self.base2new, *self.cross_dataset, *self.domain_generalization)]

    @property
    def backbones(self) -> list[str]:
        return sorted({m.backbone for m in self.methods})

    @property
    def empty(self) -> bool:
        return not (self.base2new or self.cross_dataset or self.domain_generalization)


# ---- building --------------------------------------------------------------------------------
def _method_order(method: Method) -> tuple:
    known = list(paper.TRAINER_METHODS)
    rank = known.index(method.trainer) if method.trainer in known else len(known)
    return (rank, method)


def footnote_markers(methods: Iterable[Method]) -> dict[Method, str]:
    """``[1]``, ``[2]``, ... for the groups whose config is not the shipped one, in table order."""
    marked = [m for m in sorted(set(methods), key=_method_order) if not m.shipped]
    return {m: f"[{i}]" for i, m in enumerate(marked, 1)}


def method_labels(methods: Iterable[Method]) -> dict[Method, str]:
    """The trainer name, the settings that tell apart several groups of one trainer, and the footnote marker of
    a group whose config is not the shipped one."""
    methods = sorted(set(methods), key=_method_order)
    markers = footnote_markers(methods)
    all_backbones = {m.backbone for m in methods}
    labels = {}
    for m in methods:
        same = [o for o in methods if o.trainer == m.trainer]
        parts = []
        if len({o.config_name for o in same}) > 1:
            parts.append(m.config_name)
        if len({o.num_shots for o in same}) > 1:
            parts.append(f"{m.num_shots} shots")
        if len(all_backbones) > 1:
            parts.append(m.backbone)
        label = f"{m.trainer} ({', '.join(parts)})" if parts else m.trainer
        labels[m] = f"{label} {markers[m]}" if m in markers else label
    return labels


def _footnotes(results: Sequence[Result], methods: Iterable[Method]) -> dict[Method, tuple[str, str]]:
    shipped: dict[Method, dict[str, set[str]]] = {}
    for r in results:
        for key, value in r.shipped_values:
            shipped.setdefault(r.method, {}).setdefault(key, set()).add(value)
    notes = {}
    for m, marker in footnote_markers(methods).items():
        parts = []
        for item in m.variant:
            key = item.split("=", 1)[0]
            was = sorted(shipped.get(m, {}).get(key, ()))
            parts.append(f"{item} (shipped: {' / '.join(was)})" if was else item)
        notes[m] = (marker, f"{m.trainer}: " + ", ".join(parts))
    return notes


def filter_results(
    results: Iterable[Result],
    trainers: Sequence[str] = (),
    datasets: Sequence[str] = (),
    backbone: str = "",
) -> list[Result]:
    """The results of the given trainers, datasets (table name ``OxfordPets`` or script name ``oxford_pets``,
    any case) and backbone (its label, e.g. ``ViT-B/16``); an empty filter keeps everything.

    A transfer table keeps its ImageNet source column whatever ``datasets`` says."""
    wanted = {_dataset_key(d) for d in datasets}
    kept = []
    for r in results:
        if trainers and r.method.trainer not in trainers:
            continue
        if backbone and r.method.backbone != backbone:
            continue
        source = r.protocol == CROSS_DATASET and r.dataset == paper.SOURCE_DATASET
        if wanted and not (r.dataset_names & wanted) and not source:
            continue
        kept.append(r)
    return kept


def _dataset_key(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


Cells = dict[tuple[str, Method, str, str], dict[int, float]]  # (protocol, method, dataset, subsample) -> seed -> acc


def _collect(results: Iterable[Result], seeds: Sequence[int], warnings: list[str]) -> Cells:
    cells: Cells = {}
    where: dict[tuple, str] = {}
    ignored_seeds: set[int] = set()
    for r in results:
        if r.protocol not in PROTOCOLS:
            what = "has no RUN.PROTOCOL" if not r.protocol else f"has unknown protocol {r.protocol!r}"
            warnings.append(f"not tabulated: {r.path} {what} (the protocol scripts set it)")
            continue
        if r.seed not in seeds:
            ignored_seeds.add(r.seed)
            continue
        key = (r.protocol, r.method, r.dataset, r.subsample)
        if r.seed in cells.get(key, {}):
            raise ResultsError(
                f"Two results for {r.method.trainer} / {r.dataset} / {r.subsample} classes / seed {r.seed} "
                f"({r.protocol}, one backbone and config): {where[key + (r.seed,)]} and {r.path}. Point "
                "anchoropt-results at a folder holding one run per setting (e.g. one OUTPUT per ablation), or "
                "select with --trainers / --datasets / --backbone."
            )
        cells.setdefault(key, {})[r.seed] = r.accuracy
        where[key + (r.seed,)] = r.path
    if ignored_seeds:
        listed = ", ".join(map(str, sorted(ignored_seeds)))
        warnings.append(f"ignored results of seeds {listed} (not in --seeds {' '.join(map(str, seeds))})")
    return cells


def base2new_datasets(found: Iterable[str], wanted: Sequence[str] = ()) -> tuple[str, ...]:
    """The datasets a base-to-novel table lists and averages over: the paper's 11, or the toy world's when every
    result found is from the world (its table then stands alone, as its transfer tables do); with a dataset filter
    (``wanted``), only the wanted ones of them."""
    from anchoropt.toyworld import spec  # plain data, no torch

    found = set(found)
    world = tuple(d.name for d in spec.BASE2NEW_DATASETS)
    suite = world if found and found <= set(world) else paper.BASE2NEW_DATASETS
    keys = {_dataset_key(d) for d in wanted}
    return tuple(d for d in suite if _dataset_key(d) in keys) if keys else suite


def _base2new(
    cells: Cells, method: Method, label: str, seeds: Sequence[int], warnings: list[str], suite: tuple[str, ...]
) -> Base2NewTable:
    found = {d for (p, m, d, s) in cells if p == BASE2NEW and m == method}
    extra = sorted(found - set(suite))
    rows = [
        Base2NewRow(
            d,
            seed_stats(cells.get((BASE2NEW, method, d, "base"), {}), seeds),
            seed_stats(cells.get((BASE2NEW, method, d, "new"), {}), seeds),
        )
        for d in suite + tuple(extra)
    ]
    for p, m, d, s in cells:
        if p == BASE2NEW and m == method and s not in ("base", "new"):
            warnings.append(f"not tabulated: {label} {d} base-to-novel results on {s!r} classes (expected base/new)")
    standard = [row for row in rows if row.dataset in suite]
    average = Base2NewAverage(sum(row.complete for row in standard), len(standard))
    if average.datasets_complete == average.datasets_total:
        average.base = sum(row.base.mean for row in standard) / len(standard)
        average.novel = sum(row.novel.mean for row in standard) / len(standard)
    return Base2NewTable(method, label, rows, average)


def transfer_setups() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(source, cross-dataset targets, DG targets) of each transfer protocol setup: ImageNet's and the toy world's."""
    from anchoropt.toyworld import spec  # plain data, no torch

    world = (spec.SOURCE.name, tuple(d.name for d in spec.TARGETS), tuple(d.name for d in spec.VARIANTS))
    return [(paper.SOURCE_DATASET, paper.CROSS_DATASET_TARGETS, paper.DG_TARGETS), world]


def _transfer(
    cells: Cells,
    protocol: str,
    targets: Sequence[str],
    method: Method,
    label: str,
    seeds: Sequence[int],
    source_dataset: str = paper.SOURCE_DATASET,
) -> TransferTable:
    # The source column of both transfer tables is the source model's own test (cross-dataset training run).
    source = seed_stats(cells.get((CROSS_DATASET, method, source_dataset, "all"), {}), seeds)
    return TransferTable(
        method,
        label,
        source,
        {d: seed_stats(cells.get((protocol, method, d, "all"), {}), seeds) for d in targets},
        source_dataset,
    )


def _transfer_tables(
    cells: Cells, protocol: str, methods: Sequence[Method], labels: dict[Method, str], seeds: Sequence[int]
) -> list[TransferTable]:
    """One table per method and setup with results; the ImageNet setup also takes results of unknown datasets."""
    setups = transfer_setups()
    tables = []
    for index, (source, xd_targets, dg_targets) in enumerate(setups):
        targets = xd_targets if protocol == CROSS_DATASET else dg_targets
        others = {d for s, xd, dg in setups[:index] + setups[index + 1 :] for d in (s, *xd, *dg)}
        for m in methods:
            found = {d for (p, q, d, _) in cells if q == m and (p == protocol or (p == CROSS_DATASET and d == source))}
            if paper.paper_method(m.trainer) == paper.STAGE1_METHOD and not found & set(targets):
                continue  # the scripts test a Stage I anchor on its source only: a row of "missing" would mislead
            if (found & {source, *targets}) or (index == 0 and found - others):
                tables.append(_transfer(cells, protocol, targets, m, labels[m], seeds, source))
    return tables


def build_report(
    results: Iterable[Result],
    seeds: Sequence[int] = DEFAULT_SEEDS,
    warnings: Sequence[str] = (),
    datasets: Sequence[str] = (),
) -> Report:
    """Aggregate results into the three protocol tables (one entry per method found in each); ``datasets``: the
    base-to-novel rows and average are those datasets only (see `base2new_datasets`)."""
    seeds = tuple(sorted(set(seeds)))
    results = list(results)
    report = Report(seeds=seeds, warnings=list(warnings))
    cells = _collect(results, seeds, report.warnings)
    labels = method_labels(m for (_, m, _, _) in cells)
    report.footnotes = _footnotes(results, {m for (_, m, _, _) in cells})
    by_protocol = {p: sorted({m for (q, m, _, _) in cells if q == p}, key=_method_order) for p in PROTOCOLS}
    report.base2new_datasets = base2new_datasets({d for (p, _, d, _) in cells if p == BASE2NEW}, datasets)
    report.base2new = [
        _base2new(cells, m, labels[m], seeds, report.warnings, report.base2new_datasets) for m in by_protocol[BASE2NEW]
    ]
    report.cross_dataset = _transfer_tables(cells, CROSS_DATASET, by_protocol[CROSS_DATASET], labels, seeds)
    report.domain_generalization = _transfer_tables(
        cells, DOMAIN_GENERALIZATION, by_protocol[DOMAIN_GENERALIZATION], labels, seeds
    )
    return report


def load_report(
    root: str,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    trainers: Sequence[str] = (),
    datasets: Sequence[str] = (),
    backbone: str = "",
) -> Report:
    """``find_results`` + `filter_results` + ``build_report``; raise ``ResultsError`` when ``root`` holds no
    results file (or none the filters keep)."""
    results, warnings = find_results(root)
    if not results:
        detail = f" ({len(warnings)} unreadable)" if warnings else ""
        raise ResultsError(f"No {RESULTS_FILE} files under {root}{detail}; run the protocol scripts first")
    kept = filter_results(results, trainers, datasets, backbone)
    if not kept:
        found = sorted({(r.method.trainer, r.method.backbone) for r in results})
        listed = ", ".join(f"{t} on {b}" for t, b in found)
        raise ResultsError(f"No results under {root} match the filters; found: {listed}")
    return build_report(kept, seeds, warnings, datasets)
