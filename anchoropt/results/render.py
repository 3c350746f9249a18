"""Writing a ``Report`` as text or markdown tables (tabulate), CSV (one row per number) or JSON.

With ``paper=True`` the published numbers (``anchoropt.results.paper``) sit
beside each row: in tables as a ``paper`` row and a ``Δ`` row (ours minus
paper) under it; in CSV/JSON as ``paper`` and ``diff`` fields. Published
numbers are shown only for ViT-B/16 16-shot runs of a trainer that
reproduces a published method.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Optional

from tabulate import tabulate

from anchoropt.results import paper
from anchoropt.results.tables import (
    Base2NewRow,
    Base2NewTable,
    Method,
    Report,
    SeedStats,
    TransferTable,
    harmonic_mean,
)

FORMATS = ("text", "markdown", "csv", "json")
MISSING = "missing"
NONE = "—"
JSON_SCHEMA = "anchoropt.results-table/1"


# ---- published numbers for a method ----------------------------------------------------------
def paper_base2new(method: Method, dataset: Optional[str]) -> Optional[paper.BaseNovel]:
    """Published (base, novel, hm) for one dataset, or the 11-dataset average when ``dataset`` is None."""
    if not method.comparable_to_paper:
        return None
    row = paper.base2new_average(method.trainer) if dataset is None else paper.base2new_dataset(method.trainer, dataset)
    if row is not None and row.hm is None:
        row = row._replace(hm=harmonic_mean(row.base, row.novel))
    return row


def paper_transfer(method: Method, protocol: str, source: str = paper.SOURCE_DATASET) -> dict[str, float]:
    if not method.comparable_to_paper or source != paper.SOURCE_DATASET:
        return {}
    return (
        paper.cross_dataset(method.trainer)
        if protocol == "cross_dataset"
        else paper.domain_generalization(method.trainer)
    )


def _diff(ours: Optional[float], published: Optional[float]) -> Optional[float]:
    return None if ours is None or published is None else ours - published


# ---- cell text -------------------------------------------------------------------------------
def _num(x: Optional[float]) -> str:
    return NONE if x is None else f"{x:.2f}"


def _signed(x: Optional[float]) -> str:
    return NONE if x is None else f"{x:+.2f}"


def _stats_cell(s: Optional[SeedStats]) -> str:
    if s is None:
        return MISSING
    text = f"{s.mean:.2f} ± {s.std:.2f}"
    return text if s.complete else f"{text} [{s.n}/{len(s.expected)} seeds]"


def _seeds_text(seeds: tuple[int, ...]) -> str:
    return ", ".join(map(str, seeds))


# ---- base-to-novel ---------------------------------------------------------------------------
def _bnh_text(values: tuple[Optional[float], Optional[float], Optional[float]], fmt=None) -> str:
    fmt = fmt or _num
    return " / ".join(fmt(v) for v in values)


def _base2new_cell(row: Base2NewRow) -> str:
    """``B / N / HM`` (means over seeds); the std is in the CSV and JSON formats."""
    if row.base is None and row.novel is None:
        return MISSING
    text = _bnh_text((row.base and row.base.mean, row.novel and row.novel.mean, row.hm))
    if row.complete:
        return text
    present = min(s.n if s is not None else 0 for s in (row.base, row.novel))
    return f"{text} [{present}/{len(row.base.expected if row.base else row.novel.expected)} seeds]"


def _base2new_rows(
    tables: list[Base2NewTable], show_paper: bool, suite: tuple[str, ...]
) -> tuple[list[str], list[list[str]], list[str]]:
    """One column per group, ``B / N / HM`` in each cell; without ``show_paper`` the datasets nobody ran are
    left out (returned, for a "not run" line)."""
    headers = ["Dataset"] + [t.label for t in tables]
    rows: list[list[str]] = []

    def add_paper_rows(dataset: Optional[str], ours: list[tuple[Optional[float], Optional[float], Optional[float]]]):
        published = [paper_base2new(t.method, dataset) for t in tables]
        if not show_paper or all(p is None for p in published):
            return
        rows.append(["↳ paper"] + [NONE if p is None else _bnh_text(tuple(p)) for p in published])
        rows.append(
            ["↳ Δ"]
            + [
                NONE if p is None else _bnh_text(tuple(_diff(o, q) for o, q in zip(own, p)), _signed)
                for p, own in zip(published, ours)
            ]
        )

    skipped = []
    for i, dataset in enumerate(r.dataset for r in tables[0].rows):
        row_of = [t.rows[i] for t in tables]
        if not show_paper and all(r.base is None and r.novel is None for r in row_of):
            skipped.append(dataset)
            continue
        rows.append([paper.dataset_label(dataset)] + [_base2new_cell(r) for r in row_of])
        add_paper_rows(dataset, [(r.base and r.base.mean, r.novel and r.novel.mean, r.hm) for r in row_of])
    average = []
    for t in tables:
        a = t.average
        average.append(
            _bnh_text((a.base, a.novel, a.hm))
            if a.complete
            else f"incomplete ({a.datasets_complete}/{a.datasets_total})"
        )
    rows.append([f"Average ({len(suite)})"] + average)
    if suite == paper.BASE2NEW_DATASETS:  # the published average is over these 11, not over a subset
        add_paper_rows(None, [(t.average.base, t.average.novel, t.average.hm) for t in tables])
    return headers, rows, skipped


def _align_rows(tables: list[Base2NewTable]) -> list[Base2NewTable]:
    """Give every method the same dataset rows (extra, non-standard datasets of any of them included)."""
    order = []
    for t in tables:
        order += [r.dataset for r in t.rows if r.dataset not in order]
    aligned = []
    for t in tables:
        have = {r.dataset: r for r in t.rows}
        aligned.append(
            Base2NewTable(t.method, t.label, [have.get(d, Base2NewRow(d, None, None)) for d in order], t.average)
        )
    return aligned


# ---- cross-dataset and domain generalisation -------------------------------------------------
def _transfer_rows(tables: list[TransferTable], protocol: str, show_paper: bool):
    targets = list(tables[0].targets)
    headers = (
        ["Method", f"{paper.dataset_label(tables[0].source_dataset)} (source)"]
        + [paper.dataset_label(d) for d in targets]
        + ["Average"]
    )
    rows = []
    for t in tables:
        avg = _num(t.average) if t.average is not None else f"incomplete ({t.datasets_complete}/{len(targets)})"
        rows.append([t.label, _stats_cell(t.source)] + [_stats_cell(t.targets[d]) for d in targets] + [avg])
        published = paper_transfer(t.method, protocol, t.source_dataset)
        if show_paper and published:
            columns = [paper.SOURCE_DATASET] + targets + [paper.AVERAGE]
            ours = [t.source and t.source.mean] + [t.targets[d] and t.targets[d].mean for d in targets] + [t.average]
            rows.append(["↳ paper"] + [_num(published.get(c)) for c in columns])
            rows.append(["↳ Δ"] + [_signed(_diff(o, published.get(c))) for o, c in zip(ours, columns)])
    return headers, rows


# ---- text / markdown -------------------------------------------------------------------------
def _datasets_text(n: int) -> str:
    return "1 dataset" if n == 1 else f"{n} datasets"


def _seeds_missing_text(report: Report) -> str:
    """The part every title shares: which cells lack seeds, and the backbone when there is one."""
    backbones = report.backbones
    return f"[k/{len(report.seeds)} seeds] marks a cell with seeds missing" + (
        f"; backbone {backbones[0]}" if len(backbones) == 1 else ""
    )


def _cells_text(report: Report) -> str:
    """What every transfer table's title says about its cells."""
    return (
        f"accuracy (%), mean ± std over seeds {_seeds_text(report.seeds)} (population std, as CoOp's "
        f"parse_test_res); {_seeds_missing_text(report)}"
    )


def _base2new_title(report: Report) -> str:
    return (
        f"Base-to-novel generalisation: Base / Novel / HM accuracy (%), means over seeds {_seeds_text(report.seeds)} "
        f"(their std: --format csv or json); {_seeds_missing_text(report)}. HM = 2·B·N/(B+N) of the mean Base and "
        f"mean Novel. Average: HM of the mean Base and mean Novel over the "
        f"{_datasets_text(len(report.base2new_datasets))}, only when every dataset has every seed."
    )


def _transfer_title(protocol: str, source: str, targets: int, cells: str) -> str:
    """A cross-dataset or DG title naming its source and averaging over its own targets (ImageNet's 10 and 4,
    the toy world's 3 and 4)."""
    if protocol == "cross_dataset":
        return (
            f"Cross-dataset transfer (trained on {source}, all classes): {cells}. Average: mean over "
            f"the {targets} targets, only when every target has every seed."
        )
    return (
        f"Domain generalisation (the cross-dataset {source} model): {cells}. Average: "
        f"mean over the {targets} {source} variants, only when complete."
    )


def _tables(report: Report, show_paper: bool) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, headers, rows, a line under the table) per protocol."""
    out = []
    if report.base2new:
        headers, rows, skipped = _base2new_rows(_align_rows(report.base2new), show_paper, report.base2new_datasets)
        below = f"not run: {', '.join(paper.dataset_label(d) for d in skipped)}" if skipped else ""
        out.append((_base2new_title(report), headers, rows, below))
    for protocol in ("cross_dataset", "domain_generalization"):
        tables = getattr(report, protocol)
        for source in dict.fromkeys(t.source_dataset for t in tables):  # one table per source, in order
            chosen = [t for t in tables if t.source_dataset == source]
            title = _transfer_title(protocol, source, len(chosen[0].targets), _cells_text(report))
            out.append((title, *_transfer_rows(chosen, protocol, show_paper), ""))
    return out


def footnote_lines(report: Report) -> list[str]:
    """One line per group whose config is not the shipped one: its marker and how it differs."""
    return [f"{marker} {text}" for marker, text in report.footnotes.values()]


def render_tables(report: Report, fmt: str = "text", show_paper: bool = False) -> str:
    """Text (``simple`` tables) or markdown (``github`` tables) with a title per protocol."""
    blocks = []
    for title, headers, rows, below in _tables(report, show_paper):
        table = tabulate(
            rows, headers=headers, tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True
        )
        if below:
            table += ("\n\n" if fmt == "markdown" else "\n") + below
        blocks.append(f"{title}\n\n{table}" if fmt == "markdown" else f"{title}\n{table}")
    notes = footnote_lines(report)
    if notes and blocks:
        blocks.append("Groups whose config differs from the shipped per-dataset config:\n" + "\n".join(notes))
    if show_paper and blocks:
        blocks.append(
            f"Published numbers: {paper.AVERAGE_SOURCE}; per dataset: {paper.PER_DATASET_SOURCE}; "
            f"{paper.STAGE1_SOURCE}; cross-dataset and DG: {paper.TRANSFER_SOURCE}."
        )
    return "\n\n".join(blocks) + "\n"


# ---- JSON ------------------------------------------------------------------------------------
def _stats_json(s: Optional[SeedStats]) -> Optional[dict]:
    if s is None:
        return None
    return {
        "mean": s.mean,
        "std": s.std,
        "seeds": s.seeds,
        "missing_seeds": s.missing_seeds,
        "complete": s.complete,
        "values": {str(k): v for k, v in sorted(s.values.items())},
    }


def _method_json(method: Method, label: str) -> dict:
    return {
        "method": label,
        "trainer": method.trainer,
        "config_name": method.config_name,
        "num_shots": method.num_shots,
        "backbone": method.backbone,
        "shipped_config": method.shipped,
        "variant": list(method.variant),
    }


def _bnh(values: tuple) -> dict:
    return dict(zip(("base", "novel", "hm"), values))


def _base2new_json(t: Base2NewTable, show_paper: bool) -> dict:
    rows = []
    for r in t.rows:
        row = {
            "dataset": r.dataset,
            "base": _stats_json(r.base),
            "novel": _stats_json(r.novel),
            "hm": r.hm,
            "complete": r.complete,
        }
        if show_paper:
            p = paper_base2new(t.method, r.dataset)
            ours = (r.base and r.base.mean, r.novel and r.novel.mean, r.hm)
            row["paper"] = p and _bnh(tuple(p))
            row["diff"] = p and _bnh(tuple(_diff(o, q) for o, q in zip(ours, p)))
        rows.append(row)
    a = t.average
    average = {
        "base": a.base,
        "novel": a.novel,
        "hm": a.hm,
        "complete": a.complete,
        "datasets_complete": a.datasets_complete,
        "datasets_total": a.datasets_total,
    }
    if show_paper:
        p = paper_base2new(t.method, None)
        average["paper"] = p and _bnh(tuple(p))
        average["diff"] = p and _bnh(tuple(_diff(o, q) for o, q in zip((a.base, a.novel, a.hm), p)))
    return {**_method_json(t.method, t.label), "datasets": rows, "average": average}


def _transfer_json(t: TransferTable, protocol: str, show_paper: bool) -> dict:
    published = paper_transfer(t.method, protocol, t.source_dataset) if show_paper else {}

    def entry(dataset: str, role: str, s: Optional[SeedStats]) -> dict:
        e = {"dataset": dataset, "role": role, "accuracy": _stats_json(s)}
        if show_paper:
            e["paper"] = published.get(dataset)
            e["diff"] = _diff(s and s.mean, published.get(dataset))
        return e

    datasets = [entry(t.source_dataset, "source", t.source)] + [entry(d, "target", s) for d, s in t.targets.items()]
    average = {
        "accuracy": t.average,
        "complete": t.average is not None,
        "datasets_complete": t.datasets_complete,
        "datasets_total": len(t.targets),
    }
    if show_paper:
        average["paper"] = published.get(paper.AVERAGE)
        average["diff"] = _diff(t.average, published.get(paper.AVERAGE))
    return {**_method_json(t.method, t.label), "datasets": datasets, "average": average}


def report_to_json(report: Report, show_paper: bool = False) -> dict[str, Any]:
    return {
        "schema": JSON_SCHEMA,
        "seeds": list(report.seeds),
        "std": "population (ddof=0) over seeds",
        "base2new": [_base2new_json(t, show_paper) for t in report.base2new],
        "cross_dataset": [_transfer_json(t, "cross_dataset", show_paper) for t in report.cross_dataset],
        "domain_generalization": [
            _transfer_json(t, "domain_generalization", show_paper) for t in report.domain_generalization
        ],
        "footnotes": {marker: text for marker, text in report.footnotes.values()},
        "warnings": list(report.warnings),
    }


# ---- CSV: one row per number -----------------------------------------------------------------
CSV_FIELDS = (
    "protocol",
    "method",
    "trainer",
    "config_name",
    "num_shots",
    "backbone",
    "variant",
    "dataset",
    "metric",
    "mean",
    "std",
    "seeds_present",
    "seeds_expected",
    "complete",
)


def _stat_fields(s: Optional[dict], n_expected: int) -> dict:
    if s is None:
        return {"mean": "", "std": "", "seeds_present": 0, "seeds_expected": n_expected, "complete": False}
    return {
        "mean": s["mean"],
        "std": s["std"],
        "seeds_present": len(s["seeds"]),
        "seeds_expected": n_expected,
        "complete": s["complete"],
    }


def _value_fields(value: Optional[float], complete: bool, n_expected: int) -> dict:
    return {
        "mean": "" if value is None else value,
        "std": "",
        "seeds_present": "",
        "seeds_expected": n_expected,
        "complete": complete,
    }


def render_csv(report: Report, show_paper: bool = False) -> str:
    data = report_to_json(report, show_paper)
    n = len(report.seeds)
    fields = CSV_FIELDS + (("paper", "diff") if show_paper else ())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()

    def write(protocol: str, m: dict, dataset: str, metric: str, values: dict, p=None, d=None) -> None:
        row = {
            "protocol": protocol,
            **{k: m[k] for k in ("method", "trainer", "config_name", "num_shots", "backbone")},
            "variant": "; ".join(m["variant"]),
            "dataset": dataset,
            "metric": metric,
            **values,
        }
        if show_paper:
            row.update(paper="" if p is None else p, diff="" if d is None else d)
        writer.writerow(row)

    for m in data["base2new"]:
        for r in m["datasets"]:
            for metric in ("base", "novel"):
                write(
                    "base2new",
                    m,
                    r["dataset"],
                    metric,
                    _stat_fields(r[metric], n),
                    (r.get("paper") or {}).get(metric),
                    (r.get("diff") or {}).get(metric),
                )
            write(
                "base2new",
                m,
                r["dataset"],
                "hm",
                _value_fields(r["hm"], r["complete"], n),
                (r.get("paper") or {}).get("hm"),
                (r.get("diff") or {}).get("hm"),
            )
        a = m["average"]
        for metric in ("base", "novel", "hm"):
            write(
                "base2new",
                m,
                "Average",
                metric,
                _value_fields(a[metric], a["complete"], n),
                (a.get("paper") or {}).get(metric),
                (a.get("diff") or {}).get(metric),
            )
    for protocol in ("cross_dataset", "domain_generalization"):
        for m in data[protocol]:
            for e in m["datasets"]:
                write(
                    protocol, m, e["dataset"], "accuracy", _stat_fields(e["accuracy"], n), e.get("paper"), e.get("diff")
                )
            a = m["average"]
            write(
                protocol,
                m,
                "Average",
                "accuracy",
                _value_fields(a["accuracy"], a["complete"], n),
                a.get("paper"),
                a.get("diff"),
            )
    return buf.getvalue()


def render(report: Report, fmt: str = "text", show_paper: bool = False) -> str:
    """The report in format ``fmt`` (one of ``FORMATS``)."""
    if fmt == "json":
        return json.dumps(report_to_json(report, show_paper), indent=2) + "\n"
    if fmt == "csv":
        return render_csv(report, show_paper)
    return render_tables(report, fmt, show_paper)
