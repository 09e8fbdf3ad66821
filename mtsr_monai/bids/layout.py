"""A strict reader of raw BIDS anatomical data (no pybids needed).

Only what the specification names is read: ``BIDS_DIR/dataset_description.json`` (required, with ``Name``
and ``BIDSVersion``) and
``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<key>-<value>...]_<suffix>.nii[.gz]``.
Everything else is ignored: ``derivatives/``, ``sourcedata/``, ``code/``, hidden files, other datatypes, and
files whose name breaks the rules (entities out of the specification's order, a ``sub``/``ses`` entity that
disagrees with the folder, an unknown entity); those are reported by :func:`read_dataset` as warnings, so a
typo is seen rather than silently processed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from mtsr_monai.data.datalist import BIDS_SUFFIX_MODALITY, bids_modality
from mtsr_monai.errors import InputError

#: entity keys in the order the specification requires them in a file name (anatomical data + derivatives)
ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "run", "echo", "flip", "inv", "mt", "part", "chunk")
_LABEL = re.compile(r"^[a-zA-Z0-9]+$")
_NAME = re.compile(
    r"^(?P<entities>(?:[a-z]+-[a-zA-Z0-9]+_)+)(?P<suffix>[a-zA-Z0-9]+)(?P<ext>\.nii(?:\.gz)?)$"
)


@dataclass(frozen=True)
class BIDSImage:
    """One raw anatomical image: its path, path relative to the dataset root, entities and suffix."""

    path: Path
    relpath: str
    entities: tuple[tuple[str, str], ...]
    suffix: str

    @property
    def subject(self) -> str:
        return dict(self.entities)["sub"]

    @property
    def session(self) -> str | None:
        return dict(self.entities).get("ses")

    @property
    def modality(self) -> str:
        """Model modality: ``t1`` (``t1ce`` with a ``ce-`` entity), ``t2``, ``flair``, ``pd``."""
        return bids_modality(self.suffix, dict(self.entities))

    @property
    def stem(self) -> str:
        return "_".join(f"{k}-{v}" for k, v in self.entities) + f"_{self.suffix}"


@dataclass
class BIDSDataset:
    """The images of a dataset grouped by subject label (sorted), its description, reader warnings and the
    NIfTI files in ``anat/`` ignored for their names (relative paths; each also has its warning)."""

    root: Path
    description: dict
    subjects: dict[str, list[BIDSImage]]
    warnings: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def parse_name(name: str) -> tuple[tuple[tuple[str, str], ...], str] | None:
    """``(entities, suffix)`` of a NIfTI name following the BIDS rules for anatomical data, else None."""
    m = _NAME.match(name)
    if m is None:
        return None
    pairs = tuple(tuple(p.split("-", 1)) for p in m["entities"].rstrip("_").split("_"))
    keys = [k for k, _ in pairs]
    if keys[0] != "sub" or any(k not in ENTITY_ORDER for k in keys) or len(set(keys)) != len(keys):
        return None
    if [ENTITY_ORDER.index(k) for k in keys] != sorted(ENTITY_ORDER.index(k) for k in keys):
        return None
    return pairs, m["suffix"]  # type: ignore[return-value]


def read_description(root: Path) -> dict:
    """``dataset_description.json`` of a raw dataset; InputError when missing, unreadable or incomplete."""
    path = root / "dataset_description.json"
    if not path.is_file():
        raise InputError("not a BIDS dataset: dataset_description.json is missing", root)
    try:
        description = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"unreadable dataset_description.json ({err})", path) from err
    if not isinstance(description, dict) or not {"Name", "BIDSVersion"} <= description.keys():
        raise InputError("dataset_description.json needs 'Name' and 'BIDSVersion'", path)
    if description.get("DatasetType") == "derivative":
        raise InputError("this is a derivatives dataset; give the raw BIDS dataset", path)
    return description


def _anat_folders(subject_dir: Path) -> list[tuple[str | None, Path]]:
    sessions = sorted(p for p in subject_dir.glob("ses-*") if p.is_dir())
    if sessions:
        return [(s.name[4:], s / "anat") for s in sessions if (s / "anat").is_dir()]
    return [(None, subject_dir / "anat")] if (subject_dir / "anat").is_dir() else []


def _images_of(root: Path, subject_dir: Path, warnings: list[str], ignored: list[str]) -> list[BIDSImage]:
    images = []
    label = subject_dir.name[4:]
    for session, anat in _anat_folders(subject_dir):
        for path in sorted(anat.iterdir()):
            if path.name.startswith(".") or not re.search(r"\.nii(\.gz)?$", path.name):
                continue
            rel = path.relative_to(root).as_posix()
            parsed = parse_name(path.name)
            if parsed is None:
                warnings.append(f"{rel}: name does not follow the BIDS rules; ignored")
                ignored.append(rel)
                continue
            entities, suffix = parsed
            ent = dict(entities)
            if ent["sub"] != label or ent.get("ses") != session:
                warnings.append(f"{rel}: sub/ses entities disagree with the folders; ignored")
                ignored.append(rel)
                continue
            if suffix in BIDS_SUFFIX_MODALITY:
                images.append(BIDSImage(path, rel, entities, suffix))
            elif suffix.lower() in _SUFFIX_CASEFOLD:  # a typo, not another kind of image: seen, not skipped
                warnings.append(
                    f"{rel}: suffix {suffix} is not BIDS's {_SUFFIX_CASEFOLD[suffix.lower()]}; ignored"
                )
                ignored.append(rel)
    loose = subject_dir / "anat"
    if loose.is_dir() and any(p.is_dir() for p in subject_dir.glob("ses-*")):  # not read, but reported
        for path in sorted(
            p for p in loose.iterdir() if re.search(r"\.nii(\.gz)?$", p.name) and p.name[0] != "."
        ):
            rel = path.relative_to(root).as_posix()
            warnings.append(f"{rel}: outside the subject's ses-* folders; ignored")
            ignored.append(rel)
    return images


_SUFFIX_CASEFOLD = {s.lower(): s for s in BIDS_SUFFIX_MODALITY}


def _normalise(labels: Iterable[str] | None, prefix: str) -> list[str] | None:
    if not labels:
        return None
    out = [str(x).removeprefix(prefix) for x in labels]
    bad = [x for x in out if not _LABEL.match(x)]
    if bad:
        raise InputError(f"invalid {prefix.rstrip('-')} label(s): {', '.join(bad)} (letters and digits only)")
    return out


def _filtered_out(subject: str, asked: Sequence[BIDSImage], kept: Sequence[BIDSImage]) -> list[str]:
    """A warning for each contrast of ``subject`` whose every scan the filter left out."""
    gone = sorted({im.suffix for im in asked} - {im.suffix for im in kept})
    count = {s: sum(im.suffix == s for im in asked) for s in gone}
    return [f"{subject}: the --bids-filter-file leaves out its every {s} ({count[s]} image(s))" for s in gone]


def _refuse_a_filter_keeping_none(
    root: Path, images: Sequence[BIDSImage], keep: Callable[[BIDSImage], bool]
) -> None:
    """InputError where ``keep`` (a ``--bids-filter-file``) accepts no scan of a contrast among ``images``
    (those of the whole dataset that a run uses): a label no scan has (a typo) would drop that contrast from
    the whole run. The whole dataset counts, whatever participants or sessions a run selects (one job per
    participant is common)."""
    lost = sorted({im.suffix for im in images} - {im.suffix for im in images if keep(im)})
    if lost:
        raise InputError(
            f"--bids-filter-file keeps none of the dataset's {', '.join(lost)} images (a label no scan "
            "has?); to leave a contrast out, name the others with --modality",
            root,
        )


def read_dataset(
    root: str | Path,
    participants: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    suffixes: Sequence[str] | None = None,
    keep: Callable[[BIDSImage], bool] | None = None,
    uses: Callable[[BIDSImage], bool] | None = None,
) -> BIDSDataset:
    """Read a raw BIDS dataset, keeping the given participant / session labels (``01`` or ``sub-01``) and
    suffixes (``T1w``, ``T2w``, ``FLAIR``, ``PDw``), and the images ``keep`` accepts (a
    ``--bids-filter-file``: :func:`mtsr_monai.bids.filters.passes`), whose effect on the images a run
    ``uses`` (a task's test) is checked and warned about. A participant label that is not in the dataset is
    an InputError (as in other BIDS Apps), so a typo never processes nothing silently."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError("no such folder", root)
    description = read_description(root)
    wanted = _normalise(participants, "sub-")
    wanted_ses = set(_normalise(sessions, "ses-") or [])
    bad_suffix = [s for s in suffixes or () if s not in BIDS_SUFFIX_MODALITY]
    if bad_suffix:
        raise InputError(f"unknown modality {bad_suffix}; choose from {', '.join(BIDS_SUFFIX_MODALITY)}")
    found = sorted(p for p in root.glob("sub-*") if p.is_dir() and _LABEL.match(p.name[4:]))
    labels = [p.name[4:] for p in found]
    if wanted:
        missing = sorted(set(wanted) - set(labels))
        if missing:
            raise InputError(f"participant(s) not in the dataset: {', '.join(missing)}", root)
    warnings: list[str] = []
    ignored: list[str] = []
    subjects: dict[str, list[BIDSImage]] = {}
    seen_sessions: set[str | None] = set()

    def used(im: BIDSImage) -> bool:
        return (not suffixes or im.suffix in suffixes) and (uses is None or uses(im))

    # the selected participants' scans (their misnamed files reported); the others' only for the filter check
    chosen = {d: _images_of(root, d, warnings, ignored) for d in found if not wanted or d.name[4:] in wanted}
    if keep is not None:
        others = [im for d in found if d not in chosen for im in _images_of(root, d, [], [])]
        _refuse_a_filter_keeping_none(
            root, [im for im in [*others, *chain(*chosen.values())] if used(im)], keep
        )
    for subject_dir, every in chosen.items():
        seen_sessions |= {im.session for im in every}
        if wanted_ses and not any(im.session in wanted_ses for im in every):
            # none of the sessions asked for: not a participant of this run (rather than a failed one)
            warnings.append(f"{subject_dir.name}: none of the sessions asked for; skipped")
            continue
        asked = [im for im in every if (not wanted_ses or im.session in wanted_ses)]
        asked = [im for im in asked if not suffixes or im.suffix in suffixes]
        images = [im for im in asked if keep is None or keep(im)]
        warnings += _filtered_out(subject_dir.name, [im for im in asked if used(im)], images)
        subjects[subject_dir.name[4:]] = images
    unknown = sorted(wanted_ses - seen_sessions)  # a typo among good labels is an error too
    if unknown:
        raise InputError(f"session(s) not among the selected participants': {', '.join(unknown)}", root)
    return BIDSDataset(root, description, subjects, warnings, ignored)
