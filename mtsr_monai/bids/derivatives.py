"""BIDS-derivatives output: file names, JSON sidecars with provenance, ``dataset_description.json``.

Names keep every entity of the source and add ``desc-<label>`` before the suffix, as the BIDS derivatives
specification asks for processed data (``sub-01_ses-1_desc-mtsrSR_T1w.nii.gz``). A sidecar carries
``Sources`` (BIDS URIs into the raw dataset, linked as ``raw`` in ``DatasetLinks``), ``SkullStripped``
(required for anatomical derivatives) and ``MTSRProvenance``: tool version, task, bundle name and version,
weights sha256, every parameter, the sha256 of each source, the run time, and ``ProvenanceHash``, a sha256
over all of those except the run time. An output counts as done only when its sidecar exists with the hash the
current run would write: the sidecar is written last, atomically, so a killed run never leaves a done-looking
output behind.

Files outside the specification (IQM JSON of the inputs, ``logs/``, the group report) are listed in
``.bidsignore``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtsr_monai import __version__
from mtsr_monai.bids.layout import BIDSImage
from mtsr_monai.errors import InputError
from mtsr_monai.inference.bundle import sha256 as file_sha256  # noqa: F401 (the one file hash)
from mtsr_monai.io import atomic_write_text
from mtsr_monai.io import read_json_object as read_json  # noqa: F401 (bids' name for it)
from mtsr_monai.io.outputs import written_lately

BIDS_VERSION = "1.10.0"
TOOL = "mtsr-monai"
RAW_LINK = "raw"
# folder patterns without a trailing slash: the schema validator (3.x) matches "figures" but not "figures/"
BIDSIGNORE = ("logs", "*_iqms.json", "group_iqms.tsv", "group_report.html", "figures")
README = """mtsr-monai derivatives (written by `mtsr bids`).

sub-*/[ses-*/]anat/*_desc-<label>_<suffix>.nii.gz: outputs (desc-mtsrSR: x4 in-plane super-resolution;
desc-mtsrClinicalSR: clinical-protocol restoration; a baseline's outputs: desc-mtsrSRBicubic,
desc-mtsrClinicalSRTrilinear, ...; desc-mtsrFrom<Source>Sample<i>/Mean/Std: modality
translation samples, their mean and per-voxel standard deviation). Each has a JSON sidecar with its Sources
and provenance (MTSRProvenance), IQMs (QualityMetrics) and input/output consistency or sample spread.
*_iqms.json: IQMs of the raw inputs. logs/: per-participant status, run logs, failures.tsv.
group_report.html, group_iqms.tsv: the group level.
"""
#: sidecar fields that change from run to run and are left out of the provenance hash and comparisons
VOLATILE = ("RunTime",)
#: a task's hidden work folder beside its output ``X``: ``.mtsr-work-X.<random>``
WORK_PREFIX = ".mtsr-work-"


def derivative_stem(image: BIDSImage, desc: str, suffix: str | None = None) -> str:
    """``sub-X[_ses-Y][_...]_desc-<desc>_<suffix>`` for an output made from ``image``."""
    if not desc.isalnum():
        raise ValueError(f"desc label must be alphanumeric, got {desc!r}")
    entities = "_".join(f"{k}-{v}" for k, v in image.entities)
    return f"{entities}_desc-{desc}_{suffix or image.suffix}"


def sidecar_path(image_path: str | Path) -> Path:
    """The JSON sidecar beside a derivative image (``X.nii.gz`` or ``X.nii`` -> ``X.json``)."""
    return Path(str(image_path).removesuffix(".nii.gz").removesuffix(".nii") + ".json")


def output_folder(output_dir: Path, image: BIDSImage) -> Path:
    """``OUTPUT/sub-X/[ses-Y/]anat``, the raw image's own folder mirrored."""
    return Path(output_dir) / Path(image.relpath).parent


def source_uri(image: BIDSImage) -> str:
    return f"bids:{RAW_LINK}:{image.relpath}"


def provenance_hash(provenance: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``provenance`` without its volatile fields."""
    stable = {k: v for k, v in provenance.items() if k not in (*VOLATILE, "ProvenanceHash")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


def is_done(sidecar: Path, expected_hash: str, outputs: Sequence[Path] = ()) -> bool:
    """Whether ``sidecar`` records ``expected_hash`` and every listed output exists."""
    data = read_json(sidecar)
    recorded = ((data or {}).get("MTSRProvenance") or {}).get("ProvenanceHash")
    return recorded == expected_hash and all(Path(p).is_file() for p in outputs)


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Indented JSON, written atomically (NaN/inf become null: JSON has no such numbers)."""
    return atomic_write_text(path, json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def _finite(obj: Any) -> Any:
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return _finite(obj.item())
    return obj


def dataset_description(raw_root: Path, raw_description: Mapping[str, Any]) -> dict[str, Any]:
    """The derivative dataset's description; deterministic (no dates), so every writer writes the same."""
    return {
        "Name": f"mtsr-monai derivatives of {raw_description.get('Name', raw_root.name)}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": TOOL,
                "Version": __version__,
                "Description": "super-resolution, modality translation, clinical SR and MRIQC-style QC "
                "of brain MRI (mtsr bids)",
            }
        ],
        "SourceDatasets": [{"URL": Path(raw_root).resolve().as_uri()}],
        "DatasetLinks": {RAW_LINK: Path(raw_root).resolve().as_uri()},
    }


def check_ours(output_dir: Path) -> dict[str, Any] | None:
    """``output_dir``'s dataset description (None where there is none); InputError when another tool made
    that dataset: mtsr writes nothing into it."""
    existing = read_json(output_dir / "dataset_description.json")
    makers = [g.get("Name") for g in (existing or {}).get("GeneratedBy", []) if isinstance(g, dict)]
    if existing is not None and TOOL not in makers:
        raise InputError(
            f"holds another dataset (GeneratedBy: {', '.join(map(str, makers)) or 'none'}): "
            "choose a folder of its own for mtsr's outputs",
            output_dir,
        )
    return existing


def write_dataset_files(output_dir: Path, raw_root: Path, raw_description: Mapping[str, Any]) -> None:
    """``dataset_description.json`` and ``.bidsignore`` of the output dataset (rewritten only on change)."""
    path = output_dir / "dataset_description.json"
    existing = check_ours(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    wanted = dataset_description(raw_root, raw_description)
    if existing != wanted:
        write_json(path, wanted)
    for name, text in ((".bidsignore", "\n".join(BIDSIGNORE) + "\n"), ("README", README)):
        if not (output_dir / name).is_file() or (output_dir / name).read_text() != text:
            atomic_write_text(output_dir / name, text)


def clean_partials(folder: Path, outputs: Iterable[Path], shared: Iterable[Path] = ()) -> int:
    """Delete the temporary files and work folders a killed run left in ``folder`` for ``outputs`` (and their
    sidecars): the atomic writers' hidden ``.<name>.*.part*`` files, ``.mtsr-work-<name>.*`` folders; returns
    how many. Run under the task's lock on the subject: another task, running on the same subject, has
    temporaries of its own outputs there, which are left alone. ``shared`` outputs (the input IQM files every
    task writes) lie outside that lock: their temporaries go only once an hour old."""
    import shutil

    if not folder.is_dir():
        return 0
    names = {p.name for o in outputs for p in (Path(o), sidecar_path(o))}
    common = tuple(f".{Path(o).name}." for o in shared)
    ours = tuple(f".{name}." for name in names) + common
    work = tuple(f"{WORK_PREFIX}{name}." for name in names)
    n = 0
    for path in folder.iterdir():
        if path.name.startswith(common) and written_lately(path):
            continue
        if path.name.startswith(ours) and ".part" in path.name and path.is_file():
            path.unlink(missing_ok=True)
            n += 1
        elif path.name.startswith(work) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            n += 1
    return n
