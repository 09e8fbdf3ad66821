"""``--bids-filter-file``: which scans of each contrast a run uses, in the format fMRIPrep and other BIDS Apps
read (so one file serves a whole pipeline).

The file is a JSON object; each key is a query named after a suffix (``t1w``, ``t2w``, ``flair``, ``pdw``,
any case), each value an object of BIDS entities a scan with that suffix must have: a value, a list of
accepted values, or ``null`` for "without this entity". Entities go by their pybids names (``session``,
``acquisition``, ``ceagent``, ``reconstruction``, ``run``, ``echo``, ...) or their file-name keys (``ses``,
``acq``, ``ce``, ``rec``, ...); ``datatype`` (``anat``) and ``suffix`` are accepted as they are implied.
Numeric labels compare as numbers (``"run": 1`` keeps ``run-01``); ``"*"`` means "with this entity, any
label". A suffix without a query is not filtered, and the queries of other data (``bold``, ``dwi``, ``fmap``
...) are left to the tools that read them.

Example: a session with two FLAIR runs, fused with its T1w by ``clinical-sr``::

    {"flair": {"run": 2}, "t1w": {"acquisition": null}}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mtsr_monai.bids.layout import ENTITY_ORDER, BIDSImage
from mtsr_monai.data.datalist import BIDS_SUFFIX_MODALITY
from mtsr_monai.errors import InputError
from mtsr_monai.io import read_json_object

#: pybids' long entity names -> the keys of file names
LONG_NAMES = {
    "subject": "sub",
    "session": "ses",
    "task": "task",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "run": "run",
    "echo": "echo",
    "flip": "flip",
    "inversion": "inv",
    "mtransfer": "mt",
    "part": "part",
    "chunk": "chunk",
}
#: fMRIPrep's queries of data other than the anatomical scans read here: accepted, not used
OTHER_QUERIES = {"bold", "sbref", "fmap", "dwi", "roi", "pet", "asl", "t2star", "epi", "mp2rage", "sbrefs"}
#: any label (fMRIPrep's "*")
ANY = "*"
#: a query's entity key -> the accepted labels (None: the entity must be absent)
Rules = dict[str, tuple[str | None, ...]]


def read_bids_filters(path: str | Path) -> dict[str, Rules]:
    """The filter file at ``path`` as ``{suffix: {entity key: accepted labels}}``; InputError naming what is
    wrong (unreadable, an unknown query or entity, a value that is not a label)."""
    if not Path(path).is_file():
        raise InputError("--bids-filter-file: no such file", path)
    text = read_json_object(path)
    if text is None:
        raise InputError("--bids-filter-file: not a JSON object", path)
    queries = {s.lower(): s for s in BIDS_SUFFIX_MODALITY}
    filters: dict[str, Rules] = {}
    for query, entities in text.items():
        if str(query).lower() in OTHER_QUERIES:
            continue
        suffix = queries.get(str(query).lower())
        if suffix is None:
            raise InputError(f"--bids-filter-file: unknown query {query!r}; use {', '.join(queries)}", path)
        if not isinstance(entities, Mapping):
            raise InputError(f"--bids-filter-file: {query!r} must hold an object of entities", path)
        filters[suffix] = _rules(query, suffix, entities, path)
    return filters


def _rules(query: str, suffix: str, entities: Mapping[str, Any], path: str | Path) -> Rules:
    rules: Rules = {}
    for name, value in entities.items():
        implied = {"datatype": "anat", "suffix": suffix}.get(name)
        if implied is not None:
            if value != implied:
                raise InputError(
                    f"--bids-filter-file: {query!r} asks {name} {value!r}; only {implied!r}", path
                )
            continue
        key = LONG_NAMES.get(name, name)
        if key not in ENTITY_ORDER:
            raise InputError(f"--bids-filter-file: {query!r} names an unknown entity {name!r}", path)
        values = value if isinstance(value, list) else [value]
        if not values or not all(
            v is None or isinstance(v, str | int) and not isinstance(v, bool) for v in values
        ):
            raise InputError(
                f"--bids-filter-file: {query!r} {name!r} must be a label, a list of them or null", path
            )
        rules[key] = tuple(None if v is None else str(v) for v in values)
    return rules


def image_filter(filters: Mapping[str, Rules] | None) -> Callable[[BIDSImage], bool] | None:
    """The test of :func:`passes` for ``filters``, as :func:`~mtsr_monai.bids.layout.read_dataset` takes it
    (None: no filter file, every image kept)."""
    return functools.partial(passes, filters=filters) if filters else None


def passes(image: BIDSImage, filters: Mapping[str, Rules] | None) -> bool:
    """True when ``image`` has the entities its suffix's query asks for (or no query names its suffix)."""
    rules = (filters or {}).get(image.suffix, {})
    have = dict(image.entities)
    return all(any(_same(have.get(key), label) for label in labels) for key, labels in rules.items())


def _same(have: str | None, label: str | None) -> bool:
    if label == ANY:
        return have is not None
    if have is None or label is None:
        return have is label
    if have.isdigit() and label.isdigit():
        return int(have) == int(label)
    return have == label
