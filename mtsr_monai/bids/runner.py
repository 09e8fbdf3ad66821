"""The participant level: each selected participant once, resumable, failures recorded, sharded over ranks.

For each participant of this process's share (in order, under a per-participant file lock):

1. the task plans its items (a missing modality fails the participant here, before any work);
2. an item whose outputs all carry the provenance hash this run would write is skipped;
3. otherwise the temporary files a killed run left are removed, the outputs are written (each atomically), the
   IQMs of the inputs and outputs are computed, and the sidecars are written last;
4. the participant's status (ok / skipped / failed with the reason) goes to ``logs/status/<task>/sub-X.json``.

``logs/failures.tsv`` is compiled from the status files at the end (by rank 0, after every rank finished), so
it lists every participant whose latest attempt failed. Under ``torchrun`` (``WORLD_SIZE`` > 1) a gloo
process group coordinates the ranks: rank ``r`` of ``W`` takes participants ``r, r + W, ...`` (MONAI's
``partition_dataset`` without shuffling), uses device ``cuda:LOCAL_RANK`` when ``--device cuda``, rank 0
writes ``dataset_description.json``, the run log and the failures TSV. ``shard=(i, n)`` first keeps the
``i``-th of ``n`` strided parts (one SLURM array task each), then splits that part over the ranks.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtsr_monai import __version__
from mtsr_monai.bids import derivatives as der
from mtsr_monai.bids.filters import Rules, image_filter
from mtsr_monai.bids.layout import BIDSDataset, BIDSImage, read_dataset
from mtsr_monai.bids.quality import IQM_VARIANT
from mtsr_monai.bids.sidecars import write_item_records
from mtsr_monai.bids.tasks import Item, Task
from mtsr_monai.errors import InputError
from mtsr_monai.io import atomic_write_text
from mtsr_monai.io.outputs import lock_file_exclusively

STATUS_DIR = Path("logs") / "status"
FAILURES = Path("logs") / "failures.tsv"
FAILURE_COLUMNS = ("participant_id", "task", "error_type", "reason", "finished", "host", "rank")


@dataclass
class Ranks:
    """Where this process stands: its rank among ``world`` processes and the shard of the cohort."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    shard: tuple[int, int] = (0, 1)
    host: str = field(default_factory=socket.gethostname)
    group: bool = False  # whether this module created the torch.distributed process group

    def share(self, labels: Sequence[str]) -> list[str]:
        """This process's participants: the shard's strided part, then the rank's strided part of it."""
        index, count = self.shard
        return list(labels)[index::count][self.rank :: self.world]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.group = False


def ranks_from_env(shard: tuple[int, int] = (0, 1), timeout_min: float = 1440.0) -> Ranks:
    """The ranks torchrun describes in ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; a gloo process group is
    made for the coordination (a barrier at the end and a gather of results: small, CPU-side messages, so
    gloo also serves GPU runs). The long timeout lets fast ranks wait for slow ones at the final barrier."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ranks = Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")), shard)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=timeout_min))
            ranks.group = True
    return ranks


@contextlib.contextmanager
def participant_lock(output_dir: Path, task: str, label: str) -> Iterator[bool]:
    """An exclusive ``flock`` on ``logs/locks/<task>_sub-<label>.lock``; yields False when another process
    holds it (that participant is being processed elsewhere). The OS releases it when a process dies; the
    file stays, in the derivatives, where every node of a cluster sees it."""
    path = output_dir / "logs" / "locks" / f"{task}_sub-{label}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = lock_file_exclusively(path)
    except BlockingIOError:
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _iqms_path(output_dir: Path, image: BIDSImage) -> Path:
    return der.output_folder(output_dir, image) / f"{image.stem}_iqms.json"


def _iqms_provenance(image: BIDSImage, sha: str) -> dict[str, Any]:
    prov = {
        "ToolName": der.TOOL,
        "ToolVersion": __version__,
        "IQMVariant": IQM_VARIANT,
        "SourceSha256": {der.source_uri(image): sha},
    }
    return {**prov, "ProvenanceHash": der.provenance_hash(prov)}


def item_provenance(task: Task, item: Item, shas: dict[str, str], output_dir: Path) -> dict[str, Any]:
    """Everything that decides an item's outputs; its hash says whether existing outputs can be kept."""

    prov = {
        "ToolName": der.TOOL,
        "ToolVersion": __version__,
        "Task": task.name,
        **task.identity(),
        "Parameters": task.parameters(),
        "IQMVariant": IQM_VARIANT,
        "SourceSha256": {der.source_uri(s): shas[s.relpath] for s in item.sources},
        "Outputs": [p.relative_to(output_dir).as_posix() for p in item.outputs],
    }
    return {**prov, "ProvenanceHash": der.provenance_hash(prov)}


def _item_done(item: Item, prov: dict, iqms: dict[str, dict], output_dir: Path) -> bool:
    outputs_done = all(der.is_done(der.sidecar_path(o), prov["ProvenanceHash"], [o]) for o in item.outputs)
    return outputs_done and all(
        der.is_done(_iqms_path(output_dir, s), iqms[s.relpath]["ProvenanceHash"]) for s in item.sources
    )


def process_item(task: Task, item: Item, output_dir: Path, ranks: Ranks) -> str:
    """Run one item unless its outputs are current; returns ``"skipped"`` or ``"processed"``."""

    shas = {s.relpath: der.file_sha256(s.path) for s in item.sources}
    prov = item_provenance(task, item, shas, output_dir)
    iqms = {s.relpath: _iqms_provenance(s, shas[s.relpath]) for s in item.sources}
    if _item_done(item, prov, iqms, output_dir):
        return "skipped"
    for folder in {der.output_folder(output_dir, s) for s in item.sources}:
        der.clean_partials(folder, item.outputs, shared=[_iqms_path(output_dir, s) for s in item.sources])
    # the outputs' sidecars go first: a run stopped after replacing an image but before its sidecar must not
    # leave the old sidecar vouching for the new image (a later run would skip it as done)
    for output in item.outputs:
        der.sidecar_path(output).unlink(missing_ok=True)
    start, started = time.perf_counter(), _now()
    products = task.run(item)
    runtime = {
        "Start": started,
        "Host": ranks.host,
        "Rank": ranks.rank,
        "WorldSize": ranks.world,
        "Shard": list(ranks.shard),
    }
    targets = {s.relpath: (_iqms_path(output_dir, s), iqms[s.relpath]) for s in item.sources}
    write_item_records(task, item, products, prov, targets, runtime, start, strict=task.name == "qc")
    return "processed"


def process_participant(
    task: Task, label: str, images: Sequence[BIDSImage], output_dir: Path, ranks: Ranks
) -> dict[str, Any]:
    """Plan and run one participant's items; never raises for a bad participant: returns its status."""
    start = time.perf_counter()
    status: dict[str, Any] = {
        "participant_id": f"sub-{label}",
        "task": task.name,
        "rank": ranks.rank,
        "host": ranks.host,
    }
    with participant_lock(output_dir, task.name, label) as locked:
        if not locked:
            return {**status, "status": "busy", "reason": "locked by another process"}
        try:
            outcomes = {
                it.name: process_item(task, it, output_dir, ranks) for it in task.plan(images, output_dir)
            }
        except Exception as err:  # noqa: BLE001 - a participant's failure is recorded; the cohort goes on
            reason = " ".join(str(err).split())[:400]
            status.update(status="failed", error_type=type(err).__name__, reason=reason)
        else:
            done = all(v == "skipped" for v in outcomes.values())
            status.update(status="skipped" if done else "ok", items=outcomes)
        status.update(seconds=round(time.perf_counter() - start, 3), finished=_now())
        path = output_dir / STATUS_DIR / task.name / f"sub-{label}.json"
        # a skip keeps the record of the run that made the outputs, unless that record is not a success
        stored = der.read_json(path) if status["status"] == "skipped" else None
        if stored is None or stored.get("status") not in ("ok", "skipped"):
            der.write_json(path, status)
    return status


def compile_failures(output_dir: Path) -> list[dict[str, Any]]:
    """``logs/failures.tsv`` from the status files: every participant whose latest attempt failed."""

    rows = []
    for path in sorted((output_dir / STATUS_DIR).glob("*/sub-*.json")):
        data = der.read_json(path) or {}
        if data.get("status") == "failed":
            rows.append(data)
    lines = ["\t".join(FAILURE_COLUMNS)]
    for row in rows:
        lines.append("\t".join(str(row.get(c, "")).replace("\t", " ") for c in FAILURE_COLUMNS))
    atomic_write_text(output_dir / FAILURES, "\n".join(lines) + "\n")
    return rows


def _progress(items: Sequence[str], task: Task, ranks: Ranks, enabled: bool):
    from tqdm import tqdm

    where = f" [rank {ranks.rank}/{ranks.world}]" if ranks.world > 1 else ""
    return tqdm(
        items,
        desc=f"mtsr bids {task.name}{where}",
        unit="participant",
        disable=not enabled,
        position=ranks.rank if ranks.world > 1 else None,
        dynamic_ncols=True,
    )


def participant_level(
    bids_dir: str | Path,
    output_dir: str | Path,
    task: Task,
    participants: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    ranks: Ranks | None = None,
    progress: bool = True,
    filters: Mapping[str, Rules] | None = None,
) -> dict[str, Any]:
    """Process this process's share of the participants (their scans that pass ``filters``, a
    ``--bids-filter-file``); returns the run summary (every rank's results, gathered), with ``failed``
    counting failures over all ranks and, on rank 0, ``run_log``: its path."""
    ranks = ranks or Ranks()
    output_dir = Path(output_dir).resolve()
    # every contrast read: the task picks its own (Task.usable), and sees each session, also one lacking them
    dataset = read_dataset(bids_dir, participants, sessions, keep=image_filter(filters), uses=task.usable)
    if output_dir.is_relative_to(dataset.root):
        rel = output_dir.relative_to(dataset.root).parts
        if not rel or rel[0].startswith("sub-"):
            raise InputError(
                "write outside the input's subject folders (e.g. BIDS_DIR/derivatives/mtsr)", output_dir
            )
    if not any(task.usable(im) for images in dataset.subjects.values() for im in images):
        raise InputError(f"nothing to process: no scan of the selected participants for {task.name}")
    task.identity()  # weights hashed once, before any participant (a missing bundle fails the whole run)
    if ranks.rank == 0:
        der.write_dataset_files(output_dir, dataset.root, dataset.description)
    share = ranks.share(sorted(dataset.subjects))
    start = time.perf_counter()
    results = []
    bar = _progress(share, task, ranks, progress)
    for label in bar:
        bar.set_postfix_str(f"sub-{label}")
        seen = len(task.warnings)
        results.append(process_participant(task, label, dataset.subjects[label], output_dir, ranks))
        for text in task.warnings[seen:]:  # at once, not after hours: the user may want to stop the run
            bar.write(f"warning: {text}", file=sys.stderr)
    return _finish(output_dir, task, ranks, results, time.perf_counter() - start, dataset, filters)


def _finish(
    output_dir: Path,
    task: Task,
    ranks: Ranks,
    results: list,
    seconds: float,
    dataset: BIDSDataset,
    filters: Mapping[str, Rules] | None = None,
) -> dict:
    """Gather every rank's results; rank 0 writes the run log and the failures TSV."""
    gathered = ranks.gather(
        {"rank": ranks.rank, "seconds": seconds, "results": results, "input_warnings": task.warnings}
    )
    ranks.barrier()  # every status file is written before the failures TSV is compiled
    summary = {
        "task": task.name,
        "tool_version": __version__,
        "finished": _now(),
        "world_size": ranks.world,
        "shard": list(ranks.shard),
        "ranks": gathered,
        "reader_warnings": dataset.warnings,
        "ignored_files": dataset.ignored,
        "bids_filters": {
            suffix: {k: list(v) for k, v in rules.items()} for suffix, rules in (filters or {}).items()
        },
        "input_warnings": [w for g in gathered for w in g["input_warnings"]],
    }
    every = [r for g in gathered for r in g["results"]]
    for key in ("ok", "skipped", "failed", "busy"):
        summary[key] = sum(r["status"] == key for r in every)
    if ranks.rank == 0:
        stamp = summary["finished"].replace(":", "").replace("-", "").replace("+0000", "Z")
        shard = f"_shard-{ranks.shard[0]}of{ranks.shard[1]}" if ranks.shard[1] > 1 else ""
        # the process id and a count too: jobs (or runs of one process) finishing in the same second each
        # keep their log
        base = output_dir / "logs" / "runs" / f"{stamp}_{task.name}{shard}_pid{os.getpid()}"
        path, n = base.with_name(base.name + ".json"), 1
        while path.exists():
            path, n = base.with_name(f"{base.name}_{n:03d}.json"), n + 1  # sorts after the first
        der.write_json(path, summary)
        summary["run_log"] = path  # after the write: the log does not name itself
        compile_failures(output_dir)
    ranks.barrier()  # the ranks leave the process group together, once rank 0 has written the logs
    return summary
