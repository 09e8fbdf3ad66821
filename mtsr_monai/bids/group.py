"""The group level: the IQM records of a derivatives folder gathered into one TSV and one HTML report.

It reads only what the participant level wrote (input ``*_iqms.json`` files and output sidecars with
``QualityMetrics``), so it can run in a later job, after every shard of a SLURM array finished.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtsr_monai.bids import derivatives as der
from mtsr_monai.bids.runner import compile_failures
from mtsr_monai.errors import InputError
from mtsr_monai.io import volume_stem
from mtsr_monai.reporting.bids_group import write_group_report

UNCERTAINTY_KEYS = ("mean_std_in_foreground", "p95_std_in_foreground")


def parse_stem(name: str) -> tuple[dict[str, str], str]:
    """Entities and suffix of a file name (without extension), derivative entities included."""
    parts = name.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return entities, parts[-1]


def _row(path: Path, record: dict[str, Any], role: str) -> dict[str, Any]:
    stem = path.name.removesuffix(".json").removesuffix("_iqms")
    entities, suffix = parse_stem(stem)
    prov = record.get("MTSRProvenance") or {}
    sources = record.get("Sources") or []
    iqms = record.get("QualityMetrics") or {}
    group = f"{suffix} input" if role == "input" else f"{suffix} {entities.get('desc', '')}"
    row: dict[str, Any] = {
        "participant_id": f"sub-{entities.get('sub', '')}",
        "session_id": f"ses-{entities['ses']}" if "ses" in entities else None,
        "bids_name": stem,
        "suffix": suffix,
        "group": group,
        "role": role,
        "task": prov.get("Task") if role == "output" else None,
        "source": sources[0].split(":", 2)[-1] if sources else None,
        "error": iqms.get("error"),
    }
    row.update({k: v for k, v in iqms.items() if k not in ("error", "variant")})
    row.update(record.get("Consistency") or {})
    uncertainty = record.get("Uncertainty") or {}
    row.update({k: uncertainty.get(k) for k in UNCERTAINTY_KEYS if k in uncertainty})
    return row


def source_suffix(row: dict[str, Any]) -> str:
    """The suffix of the raw image a row comes from: its own for an input, its source's for an output (a
    translation's suffix is its target's), as the participant level's ``--modality`` selects them."""
    if row["role"] == "input" or not row["source"]:
        return row["suffix"]
    return parse_stem(volume_stem(row["source"]))[1]


def collect_rows(output_dir: Path, tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per input IQM file and per output sidecar holding ``QualityMetrics`` (``tasks`` filters the
    outputs), sorted by participant and name."""
    rows = []
    for path in sorted(output_dir.glob("sub-*/**/*.json")):
        record = der.read_json(path)
        if not record or "QualityMetrics" not in record:
            continue
        role = "input" if path.name.endswith("_iqms.json") else "output"
        if role == "output" and tasks and (record.get("MTSRProvenance") or {}).get("Task") not in tasks:
            continue
        rows.append(_row(path, record, role))
    return sorted(
        rows, key=lambda r: (r["participant_id"], r["session_id"] or "", r["role"] != "input", r["bids_name"])
    )


def group_level(
    output_dir: str | Path,
    tasks: Sequence[str] | None = None,
    participants: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    suffixes: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write ``group_iqms.tsv``, ``group_report.html`` (and its figure) in ``output_dir``; refreshes
    ``logs/failures.tsv`` from the status files first (the consolidated list after a sharded run).
    ``participants`` / ``sessions`` (labels without ``sub-`` / ``ses-``) restrict the report to them,
    ``suffixes`` (``T1w`` ...) to the images made from raw images with those suffixes."""

    output_dir = Path(output_dir).resolve()
    if der.check_ours(output_dir) is None:
        raise InputError("no mtsr derivatives here (run the participant level first)", output_dir)
    failures = compile_failures(output_dir)
    if tasks:
        failures = [f for f in failures if f.get("task") in tasks]
    rows = collect_rows(output_dir, tasks)
    if participants:
        wanted = {f"sub-{p}" for p in participants}
        rows = [r for r in rows if r["participant_id"] in wanted]
        failures = [f for f in failures if f.get("participant_id") in wanted]
    if sessions:
        rows = [r for r in rows if r["session_id"] in {f"ses-{s}" for s in sessions}]
    if suffixes:
        rows = [r for r in rows if source_suffix(r) in suffixes]
    if not rows:
        raise InputError("no quality records found (run the participant level first)", output_dir)
    description = der.read_json(output_dir / "dataset_description.json") or {}
    intro = report_intro(str(description.get("Name", output_dir.name)), tasks)
    return write_group_report(rows, failures, output_dir, intro=intro)


def report_intro(name: str, tasks: Sequence[str] | None) -> str:
    """The group report's first paragraph, as HTML: the dataset's name and the tasks escaped (a name such
    as "T1 <FLAIR" would open a tag and swallow the page's text)."""
    return (
        f"{html.escape(name)}; tasks: {html.escape(', '.join(tasks)) if tasks else 'all found'}. "
        "IQMs as in MRIQC (mtsr qc); outputs are measured with their input's tissue map; consistency = the "
        "output averaged back onto the input grid against the input; sample spread = mean per-voxel std of "
        "the translation samples over the foreground."
    )
