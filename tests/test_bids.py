"""``mtsr bids``: the strict reader, derivative names, provenance, resuming, failures, the group report,
and the participant level on a small BIDS tree cropped and coarsened from ../shared/data (in-process, under
kill -9, and under torchrun with 2 gloo ranks, on 2 of the participants)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, write_nifti

# BIDS derivative name of an anatomical image: entities in the specification's order, desc last, then suffix
DERIVATIVE = re.compile(
    r"^sub-[a-zA-Z0-9]+(_ses-[a-zA-Z0-9]+)?(_acq-[a-zA-Z0-9]+)?(_ce-[a-zA-Z0-9]+)?(_rec-[a-zA-Z0-9]+)?"
    r"(_run-[0-9]+)?_desc-[a-zA-Z0-9]+_(T1w|T2w|FLAIR|PDw)\.(nii\.gz|json)$"
)
MTSR = [sys.executable, "-m", "mtsr_monai"]


def _raw_tree(root: Path, subjects: dict[str, list[str]]) -> Path:
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    rng = np.random.default_rng(0)
    for rel in [f for files in subjects.values() for f in files]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_nifti(path, rng.random((8, 8, 4)).astype(np.float32))
    return root


def test_reader_keeps_valid_anat_images_and_ignores_derivatives_and_misnamed(tmp_path):
    from mtsr_monai.bids.layout import read_dataset

    root = _raw_tree(
        tmp_path / "raw",
        {
            "01": ["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_run-1_acq-x_T2w.nii.gz"],
            "02": [
                "sub-02/ses-a/anat/sub-02_ses-a_FLAIR.nii.gz",
                "sub-02/ses-a/anat/sub-03_ses-a_T1w.nii.gz",
            ],
            "d": ["derivatives/x/sub-01/anat/sub-01_desc-x_T1w.nii.gz", "sourcedata/sub-01_T1w.nii.gz"],
        },
    )
    ds = read_dataset(root)
    assert sorted(ds.subjects) == ["01", "02"]
    assert [im.relpath for im in ds.subjects["01"]] == ["sub-01/anat/sub-01_T1w.nii.gz"]
    assert [(im.session, im.suffix) for im in ds.subjects["02"]] == [("a", "FLAIR")]
    assert len(ds.warnings) == 2  # entities out of order; sub entity disagreeing with its folder
    assert list(read_dataset(root, participants=["sub-02"], suffixes=["FLAIR"]).subjects) == ["02"]


def test_reader_refuses_missing_description_and_unknown_participant(tmp_path):
    from mtsr_monai.bids.layout import read_dataset
    from mtsr_monai.errors import InputError

    root = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})
    with pytest.raises(InputError, match="participant"):
        read_dataset(root, participants=["07"])
    (root / "dataset_description.json").unlink()
    with pytest.raises(InputError, match="dataset_description"):
        read_dataset(root)


def test_reader_reports_a_miscased_suffix_and_refuses_an_unknown_session_among_known_ones(tmp_path):
    from mtsr_monai.bids.layout import read_dataset
    from mtsr_monai.errors import InputError

    anat = "sub-01/ses-1/anat/sub-01_ses-1"
    root = _raw_tree(
        tmp_path / "raw", {"01": [f"{anat}_T1w.nii.gz", f"{anat}_t2w.nii.gz", f"{anat}_angio.nii.gz"]}
    )
    ds = read_dataset(root)
    assert ds.ignored == [f"{anat}_t2w.nii.gz"] and "is not BIDS's T2w" in ds.warnings[0]
    with pytest.raises(InputError, match="session.*: 99"):
        read_dataset(root, sessions=["1", "99"])


def test_derivative_names_follow_the_bids_entity_rules(tmp_path):
    from mtsr_monai.bids.derivatives import derivative_stem
    from mtsr_monai.bids.layout import read_dataset
    from mtsr_monai.bids.tasks import SuperResolveTask, TranslateTask

    root = _raw_tree(
        tmp_path / "raw", {"01": ["sub-01/ses-2/anat/sub-01_ses-2_acq-ax_ce-gd_run-1_T1w.nii.gz"]}
    )
    image = read_dataset(root).subjects["01"][0]
    assert image.modality == "t1ce"
    names = [derivative_stem(image, "mtsrSR") + ".nii.gz"]
    names += [s + ".json" for s in TranslateTask(target="FLAIR", samples=2).output_stems(image)]
    assert names[0] == "sub-01_ses-2_acq-ax_ce-gd_run-1_desc-mtsrSR_T1w.nii.gz"
    baseline = SuperResolveTask(method="bicubic").output_stems(image)[0]  # beside the model's, not over them
    assert baseline == "sub-01_ses-2_acq-ax_ce-gd_run-1_desc-mtsrSRBicubic_T1w"
    assert all(DERIVATIVE.match(n) for n in names), names
    with pytest.raises(ValueError):
        derivative_stem(image, "not-alnum")


def test_provenance_hash_ignores_run_time_but_not_parameters():
    from mtsr_monai.bids.derivatives import provenance_hash

    base = {"Task": "qc", "Parameters": {"a": 1}}
    assert provenance_hash({**base, "RunTime": {"Seconds": 1}}) == provenance_hash({**base, "RunTime": {}})
    assert provenance_hash(base) != provenance_hash({**base, "Parameters": {"a": 2}})


def test_shards_and_ranks_give_each_participant_to_exactly_one_process():
    from mtsr_monai.bids.runner import Ranks

    labels = [f"{i:02d}" for i in range(11)]
    for shards, world in ((1, 1), (1, 2), (3, 2), (4, 3)):
        seen = [
            lab
            for s in range(shards)
            for r in range(world)
            for lab in Ranks(r, world, shard=(s, shards)).share(labels)
        ]
        assert sorted(seen) == labels


def test_tukey_fences_flag_only_the_extreme_value():
    from mtsr_monai.reporting.bids_group import flag_outliers

    rows = [
        {"group": "T1w input", "bids_name": f"s{i}", "participant_id": f"sub-{i}", "cjv": v}
        for i, v in enumerate([0.40, 0.41, 0.42, 0.43, 0.44, 0.90])
    ]
    flags = flag_outliers(rows)
    assert (
        [f["bids_name"] for f in flags] == ["s5"]
        and rows[5]["outliers"] == "cjv"
        and rows[0]["outliers"] == ""
    )


def test_clean_partials_removes_only_leftovers_of_killed_writers_of_its_own_outputs(tmp_path):
    from mtsr_monai.bids.derivatives import clean_partials

    ours = tmp_path / "sub-01_desc-mtsrSR_T1w.nii.gz"
    theirs = ".sub-01_desc-mtsrMT_FLAIR.nii.gz.def.part.nii.gz"  # another task's, running on the subject
    for name in (
        ours.name,
        ".sub-01_desc-mtsrSR_T1w.nii.gz.abc.part.nii.gz",
        ".sub-01_desc-mtsrSR_T1w.json.x.part",
        theirs,
    ):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f".mtsr-work-{ours.name}.123").mkdir()
    (tmp_path / ".mtsr-work-sub-01_desc-mtsrMT_FLAIR.nii.gz.456").mkdir()
    assert clean_partials(tmp_path, [ours]) == 3
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".mtsr-work-sub-01_desc-mtsrMT_FLAIR.nii.gz.456", theirs, ours.name]


def test_clean_partials_leaves_a_fresh_temporary_of_the_iqm_file_every_task_shares(tmp_path):
    import os
    import time

    from mtsr_monai.bids.derivatives import clean_partials

    iqms = tmp_path / "sub-01_T1w_iqms.json"
    writing = tmp_path / ".sub-01_T1w_iqms.json.a1.part.json"  # another task writing it now
    killed = tmp_path / ".sub-01_T1w_iqms.json.b2.part.json"
    writing.write_text("{")
    killed.write_text("{")
    os.utime(killed, (time.time() - 7200, time.time() - 7200))
    assert clean_partials(tmp_path, [], shared=[iqms]) == 1
    assert writing.exists() and not killed.exists()


# ------------------------------------------------------------- real data: a small tree from ../shared/data
@pytest.fixture(scope="module")
def cohort(tmp_path_factory, shared_data: Path) -> Path:
    """4 participants (3 BraTS, 1 TCGA) with T1w/T2w/FLAIR: the central 192 x 192 mm (the brain) coarsened
    to 6 mm in-plane (32 x 32 voxels), 5 axial slices, so a run takes seconds."""
    from mtsr_monai.bids.convert import shared_cohort, write_bids_tree

    subjects = shared_cohort(shared_data)
    chosen = subjects[:3] + [s for s in subjects if s["label"].startswith("tcga")][:1]
    return write_bids_tree(
        chosen, tmp_path_factory.mktemp("bids") / "raw", size_mm=(192, 192, 5), factors=(6, 6, 1)
    )


def _mtsr(*args: str) -> int:
    """``mtsr bids ...`` in this process with one torch thread and one BLAS thread, as a torchrun rank has
    (threads spinning in OpenMP barriers on a shared CPU slow a run many times over, and a threaded BLAS
    changes the QC floats' last bits); the thread counts are restored for the other tests."""
    import torch
    from threadpoolctl import threadpool_limits

    from mtsr_monai.cli import main

    threads = torch.get_num_threads()
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            return main(["bids", *map(str, args), "--no-progress", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sr_run(cohort, tmp_path_factory) -> Path:
    """The SR task (shipped model) over the cohort, counting model loads."""
    from mtsr_monai.bids import tasks

    out = tmp_path_factory.mktemp("out") / "sr"
    loads = []
    original = tasks.load_bundle_network  # counted where the SR task calls it
    tasks.load_bundle_network = lambda *a, **k: loads.append(1) or original(*a, **k)
    try:
        assert _mtsr(cohort, out, "participant", "--task", "super-resolve") == 0
    finally:
        tasks.load_bundle_network = original
    assert len(loads) == 1  # one model load for the 4 participants (12 images)
    return out


def test_participant_level_writes_bids_derivatives_with_provenance(cohort, sr_run):
    from mtsr_monai.inference.bundle import sha256

    images = sorted(sr_run.glob("sub-*/anat/*_desc-mtsrSR_*.nii.gz"))
    assert len(images) == 12 and all(DERIVATIVE.match(p.name) for p in images)
    sidecar = json.loads(images[0].with_name(images[0].name.replace(".nii.gz", ".json")).read_text())
    prov = sidecar["MTSRProvenance"]
    assert sidecar["Sources"][0].startswith("bids:raw:sub-") and isinstance(sidecar["SkullStripped"], bool)
    assert prov["Bundle"]["Name"] and prov["Bundle"]["Version"]
    assert prov["WeightsSha256"] == sha256(REPO / "bundles" / "mtsr_sr" / "models" / "model.pt")
    assert prov["Parameters"]["method"] == "model" and prov["Parameters"]["scale"] == 4
    assert prov["RunTime"]["Seconds"] > 0 and len(prov["ProvenanceHash"]) == 64
    assert sidecar["Consistency"]["consistency_r"] > 0.8  # the SR averaged back reproduces its input
    description = json.loads((sr_run / "dataset_description.json").read_text())
    assert (
        description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "mtsr-monai"
    )
    assert len(list(sr_run.glob("sub-*/anat/*_iqms.json"))) == 12


def test_rerun_skips_done_participants_and_redoes_changed_parameters(cohort, sr_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(sr_run, out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("sub-*/anat/*")}
    assert (
        _mtsr(cohort, out, "participant", "--task", "super-resolve", "--participant-label", "bratsTCIA01201")
        == 0
    )
    assert {p: p.stat().st_mtime_ns for p in out.glob("sub-*/anat/*")} == mtimes
    runs = sorted((out / "logs" / "runs").glob("*.json"))
    assert json.loads(runs[-1].read_text())["skipped"] == 1
    one = ["--participant-label", "bratsTCIA01201"]
    assert _mtsr(cohort, out, "participant", "--task", "super-resolve", *one, "--roi-size", "32") == 0
    changed = [p for p, t in mtimes.items() if p.stat().st_mtime_ns != t]
    assert changed and all("bratsTCIA01201" in p.name and "iqms" not in p.name for p in changed)


def test_an_input_already_fine_in_plane_is_warned_about_at_once_in_its_sidecar_and_run_log(tmp_path, capsys):
    raw = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})  # 1 mm voxels
    out = tmp_path / "out"
    assert _mtsr(raw, out, "participant", "--task", "super-resolve") == 0
    sidecar = json.loads(next(out.glob("sub-01/anat/*_desc-mtsrSR_T1w.json")).read_text())
    assert "1.00 x 1.00 mm in-plane voxels" in sidecar["Warnings"][0]
    run_log = json.loads(next((out / "logs" / "runs").glob("*.json")).read_text())
    assert run_log["input_warnings"][0].startswith("sub-01/anat/sub-01_T1w.nii.gz: sub-01_T1w.nii.gz has")
    err = capsys.readouterr().err
    assert "warning: sub-01/anat/sub-01_T1w.nii.gz:" in err and "1 input(s) warned about" in err


def test_failing_participants_are_recorded_and_the_cohort_goes_on(cohort, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(cohort, raw)
    labels = sorted(p.name for p in raw.glob("sub-*"))
    (raw / labels[0] / "anat" / f"{labels[0]}_T1w.nii.gz").write_bytes(b"not a nifti")
    (raw / labels[1] / "anat" / f"{labels[1]}_FLAIR.nii.gz").unlink()
    out = tmp_path / "out"
    args = ["--task", "super-resolve", "--sr-method", "bicubic", "--modality", "T1w", "FLAIR"]
    code = _mtsr(raw, out, "participant", *args)
    assert code == 1
    rows = [line.split("\t") for line in (out / "logs" / "failures.tsv").read_text().splitlines()[1:]]
    assert sorted(r[0] for r in rows) == labels[:2]
    reasons = " ".join(r[3] for r in rows)
    assert "missing modality FLAIR" in reasons and "unreadable" in reasons
    assert len(list(out.glob(f"{labels[3]}/anat/*_desc-mtsrSRBicubic_*.nii.gz"))) == 2


def test_group_report_has_every_image_and_a_figure(cohort, sr_run):
    assert _mtsr(cohort, sr_run, "group") == 0
    tsv = (sr_run / "group_iqms.tsv").read_text().splitlines()
    header = tsv[0].split("\t")
    assert len(tsv) == 1 + 24 and {"cjv", "consistency_r", "outliers"} <= set(header)
    page = (sr_run / "group_report.html").read_text()
    assert "data:image/png;base64," in page and page.count("<tr>") >= 24 + 6
    assert "T1w mtsrSR" in page and "T1w input" in page


def test_a_second_group_level_on_one_folder_at_once_is_refused(cohort, sr_run, capsys):
    from mtsr_monai.io.outputs import OutputLocks

    report = sr_run / "group_report.html"
    before = report.read_bytes() if report.exists() else None
    other = OutputLocks()  # a group level of another process, holding the folder's report
    other.acquire(report, "mtsr bids group")
    try:
        assert _mtsr(cohort, sr_run, "group") == 2
        assert "another mtsr run" in capsys.readouterr().err
    finally:
        other.release()
    assert (report.read_bytes() if report.exists() else None) == before


def _validator() -> str | None:
    found = shutil.which("bids-validator-deno") or Path(sys.executable).with_name("bids-validator-deno")
    return str(found) if found and Path(found).exists() else None


def test_outputs_pass_the_bids_validator(sr_run):
    validator = _validator()
    if validator is None:
        pytest.skip(
            "bids-validator-deno not installed (pip install bids-validator-deno); names checked above"
        )
    result = subprocess.run([validator, "--json", str(sr_run)], capture_output=True, text=True, timeout=300)
    issues = json.loads(result.stdout)["issues"]["issues"]
    errors = [i for i in issues if i["severity"] == "error"]
    assert not errors, errors[:3]


def test_qc_translate_and_clinical_tasks_write_their_outputs(cohort, tmp_path):
    label = sorted(p.name for p in cohort.glob("sub-*"))[0][4:]
    out = tmp_path / "out"
    assert _mtsr(cohort, out, "participant", "--task", "qc", "--participant-label", label) == 0
    assert len(list(out.glob("sub-*/anat/*_iqms.json"))) == 3
    args = ["--participant-label", label, "--modality", "T1w", "--target", "FLAIR", "--samples", "2"]
    assert _mtsr(cohort, out, "participant", "--task", "translate", *args) == 0
    names = sorted(p.name for p in out.glob("sub-*/anat/*mtsrFromT1w*.nii.gz"))
    assert names == [
        f"sub-{label}_desc-mtsrFromT1w{d}_FLAIR.nii.gz" for d in ("Mean", "Sample0", "Sample1", "Std")
    ]
    mean = json.loads(
        (out / f"sub-{label}" / "anat" / f"sub-{label}_desc-mtsrFromT1wMean_FLAIR.json").read_text()
    )
    assert mean["Uncertainty"]["mean_std_in_foreground"] > 0
    # the 6 mm pixels are warned about with the file named: in the sidecar and in the run log
    assert "mm pixels" in mean["Warnings"][0]
    log = json.loads(max((out / "logs" / "runs").glob("*_translate_*.json")).read_text())
    assert any(f"sub-{label}" in w and "mm pixels" in w for w in log["input_warnings"])
    same = ["--participant-label", label, "--modality", "T1w", "--target", "T1w"]
    assert _mtsr(cohort, tmp_path / "same", "participant", "--task", "translate", *same) == 2
    assert (
        _mtsr(
            cohort,
            out,
            "participant",
            "--task",
            "clinical-sr",
            "--participant-label",
            label,
            "--spacing",
            "1.25",  # the 5 mm crop keeps 4 slices (the clinical gain step smooths along every axis)
        )
        == 0
    )
    assert len(list(out.glob("sub-*/anat/*_desc-mtsrClinicalSR_*.nii.gz"))) == 3
    assert _mtsr(cohort, out, "group") == 0


# --------------------------------------------------------------------------- processes: kill -9, torchrun
def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _two_participants(cohort: Path, root: Path) -> Path:
    """A copy of the cohort with its first two participants: one each for two ranks, or one done and one
    interrupted, at half the run time."""
    raw = root / "raw2"
    later = sorted(p.name for p in cohort.glob("sub-*"))[2:]
    shutil.copytree(cohort, raw, ignore=lambda folder, names: [n for n in names if n in later])
    return raw


@pytest.mark.slow
def test_kill_9_then_rerun_finishes_and_never_leaves_a_partial_file(cohort, tmp_path):
    import nibabel as nib

    raw, out = _two_participants(cohort, tmp_path), tmp_path / "out"
    cmd = [*MTSR, "bids", str(raw), str(out), "participant", "--task", "super-resolve", "--no-progress"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    status = out / "logs" / "status" / "super-resolve"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(status.glob("*.json")):
        time.sleep(0.2)
    time.sleep(1.0)  # into the second participant
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # final names only: pathlib's glob also matches the hidden ".<name>.*.part.nii.gz" written at the kill
    for path in out.glob("sub-*/anat/[!.]*.nii.gz"):
        assert nib.load(str(path)).get_fdata().size > 0  # every final-named image is whole
    for path in out.glob("sub-*/anat/[!.]*.json"):
        json.loads(path.read_text())
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-8000:]  # rank 1's own lines come before torchrun's
    run_log = json.loads(sorted((out / "logs" / "runs").glob("*.json"))[-1].read_text())
    assert run_log["skipped"] >= 1 and run_log["skipped"] + run_log["ok"] == 2
    assert len(list(out.glob("sub-*/anat/*_desc-mtsrSR_*.json"))) == 6
    assert not [p for p in out.rglob(".*") if p.name != ".bidsignore"]  # no temporary files left


def _volumes_and_sidecars(out: Path) -> dict[str, object]:
    import nibabel as nib

    found: dict[str, object] = {}
    for path in sorted(out.glob("sub-*/anat/*")):
        if path.name.endswith(".nii.gz"):
            img = nib.load(str(path))
            found[path.name] = (np.asarray(img.dataobj), img.affine)
        else:
            data = json.loads(path.read_text())
            data["MTSRProvenance"].pop("RunTime")
            found[path.name] = data
    return found


@pytest.mark.slow
def test_two_gloo_ranks_process_each_participant_once_and_match_one_process(cohort, sr_run, tmp_path):
    raw, two = _two_participants(cohort, tmp_path), tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = ["participant", "--task", "super-resolve", "--no-progress", "--threads", "1"]  # as sr_run
    result = _run([*torchrun, "-m", "mtsr_monai", "bids", str(raw), str(two), *args])
    assert result.returncode == 0, result.stderr[-8000:]  # rank 1's own lines come before torchrun's
    run_log = json.loads(next((two / "logs" / "runs").glob("*.json")).read_text())
    shares = [sorted(r["participant_id"] for r in rank["results"]) for rank in run_log["ranks"]]
    assert run_log["world_size"] == 2 and all(shares)
    assert sorted(shares[0] + shares[1]) == sorted(p.name for p in raw.glob("sub-*"))
    # the one-process run is sr_run (in this process, one thread): the same participants' files, equal
    b = _volumes_and_sidecars(two)
    a = {k: v for k, v in _volumes_and_sidecars(sr_run).items() if k.split("_")[0] in shares[0] + shares[1]}
    assert a.keys() == b.keys() and len(a) == 18
    for name in a:
        if isinstance(a[name], tuple):
            assert np.array_equal(a[name][0], b[name][0]) and np.array_equal(a[name][1], b[name][1]), name
        else:
            assert a[name] == b[name], name


def test_an_output_folder_that_cannot_be_written_is_bad_input(tmp_path, capsys):
    from mtsr_monai.cli import main

    (tmp_path / "afile").write_text("not a folder")
    code = main(
        ["bids", str(tmp_path), str(tmp_path / "afile" / "derivatives"), "participant", "--task", "qc"]
    )
    assert code == 2 and "cannot write outputs under it" in capsys.readouterr().err


def test_fp16_without_cuda_is_refused_before_any_participant_is_run(tmp_path, capsys):
    raw = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})
    out = tmp_path / "out"
    assert _mtsr(raw, out, "participant", "--task", "super-resolve", "--precision", "fp16") == 2
    assert "--precision fp16 needs --device cuda" in capsys.readouterr().err
    assert not list(out.glob("sub-*")) and not (out / "logs").exists()


def test_an_outputs_iqms_use_the_inputs_air_and_head_so_faint_background_signal_makes_no_air_region():
    from mtsr_monai.bids.quality import input_masks, input_quality, output_quality

    g = np.indices((40, 40, 30)).astype(float) - np.array([19.5, 19.5, 14.5])[:, None, None, None]
    r = np.sqrt((g**2).sum(0))
    rng = np.random.default_rng(0)
    img = np.array([300.0, 400.0, 100.0, 0.0])[np.digitize(r, [7, 11, 14])]
    img = (img + np.where(r < 14, 10 * rng.standard_normal(r.shape), 0)).astype(np.float32)  # skull-stripped
    iqms, tissues = input_quality(img, np.eye(4), "t1")
    leaked = img + (3.0 * np.abs(rng.standard_normal(img.shape)) * (r >= 14)).astype(np.float32)
    out = output_quality(leaked, np.eye(4), tissues, np.eye(4), input_masks(img))
    assert iqms["air_voxels"] == out["air_voxels"] == 0
    assert out["cnr"] == pytest.approx(iqms["cnr"])


def test_a_participant_held_by_another_run_is_skipped_and_free_once_released(tmp_path):
    from mtsr_monai.bids.runner import participant_lock

    with participant_lock(tmp_path, "qc", "01") as first:
        with (
            participant_lock(tmp_path, "qc", "01") as second,
            participant_lock(tmp_path, "qc", "02") as other,
        ):
            assert first and not second and other
    with participant_lock(tmp_path, "qc", "01") as again:
        assert again


def _bicubic(raw: Path, out: Path, *extra: str) -> int:
    return _mtsr(raw, out, "participant", "--task", "super-resolve", "--sr-method", "bicubic", *extra)


def test_a_rerun_stopped_before_its_sidecars_leaves_nothing_that_a_later_run_takes_as_done(
    tmp_path, monkeypatch
):
    from mtsr_monai.bids import tasks

    raw = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})
    out = tmp_path / "out"
    assert _bicubic(raw, out) == 0
    sidecar = next(out.glob("sub-01/anat/*_desc-mtsrSRBicubic_T1w.json"))

    def stopped(self, item):  # as a run killed after replacing the image, before writing its sidecar
        raise RuntimeError("stopped")

    monkeypatch.setattr(tasks.SuperResolveTask, "run", stopped)
    assert _bicubic(raw, out, "--roi-size", "32") == 1
    assert not sidecar.exists()  # the old sidecar no longer vouches for whatever the image now holds
    monkeypatch.undo()
    assert _bicubic(raw, out) == 0
    run_logs = sorted((out / "logs" / "runs").glob("*.json"))
    assert len(run_logs) == 3  # one log a run, even within one second
    assert json.loads(run_logs[-1].read_text())["ok"] == 1  # redone, not skipped


def test_a_failed_status_does_not_outlive_a_later_clean_run(tmp_path):
    raw = _raw_tree(
        tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"], "02": ["sub-02/anat/sub-02_FLAIR.nii.gz"]}
    )
    out = tmp_path / "out"
    assert _bicubic(raw, out) == 0
    assert _bicubic(raw, out, "--modality", "FLAIR") == 1  # sub-01 has none of it: recorded as failed
    assert _bicubic(raw, out) == 0  # skipped: the outputs are current
    assert (out / "logs" / "failures.tsv").read_text().count("\n") == 1  # the header alone
    status = json.loads(next((out / "logs").rglob("sub-01.json")).read_text())
    assert status["status"] == "skipped"


def test_an_output_folder_of_another_tools_dataset_is_refused_untouched(tmp_path, capsys):
    raw = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})
    other = tmp_path / "fmriprep"
    other.mkdir()
    text = '{"Name": "x", "BIDSVersion": "1.10.0", "GeneratedBy": [{"Name": "fMRIPrep"}]}'
    (other / "dataset_description.json").write_text(text)
    assert _bicubic(raw, other) == 2
    assert (other / "dataset_description.json").read_text() == text
    assert "fMRIPrep" in capsys.readouterr().err


def test_a_session_label_skips_participants_without_it_and_one_nowhere_is_bad_input(tmp_path):
    raw = _raw_tree(
        tmp_path / "raw",
        {"01": ["sub-01/anat/sub-01_T1w.nii.gz"], "02": ["sub-02/ses-a/anat/sub-02_ses-a_T1w.nii.gz"]},
    )
    out = tmp_path / "out"
    assert _bicubic(raw, out, "--session-label", "a") == 0
    assert list(out.glob("sub-02/ses-a/anat/*_desc-mtsrSRBicubic_T1w.nii.gz"))
    assert not list(out.glob("sub-01/anat/*.nii.gz"))
    assert _bicubic(raw, out, "--session-label", "zz") == 2

    sidecar = json.loads(next(out.glob("sub-02/ses-a/anat/*_desc-mtsrSRBicubic_T1w.json")).read_text())
    assert sidecar["SliceAxis"] == {"ArrayAxis": 2, "Plane": "axial"}  # "auto" recorded as it resolved


def test_samples_beyond_a_runs_number_are_removed_with_their_sidecars(tmp_path):
    from mtsr_monai.bids.derivatives import derivative_stem
    from mtsr_monai.bids.layout import read_dataset
    from mtsr_monai.bids.tasks import TranslateTask

    raw = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})
    image = read_dataset(raw).subjects["01"][0]
    folder = tmp_path / "anat"
    folder.mkdir()
    for k in range(4):
        stem = derivative_stem(image, f"mtsrFromT1wSample{k}", "FLAIR")
        (folder / f"{stem}.nii.gz").write_bytes(b"x")
        (folder / f"{stem}.json").write_text("{}")
    TranslateTask(samples=2)._remove_extra_samples(image, folder)
    assert sorted(p.name.split("desc-")[1] for p in folder.iterdir()) == [
        "mtsrFromT1wSample0_FLAIR.json",
        "mtsrFromT1wSample0_FLAIR.nii.gz",
        "mtsrFromT1wSample1_FLAIR.json",
        "mtsrFromT1wSample1_FLAIR.nii.gz",
    ]


def test_the_group_level_reports_only_the_participants_asked_for_and_checks_the_raw_dataset(tmp_path):
    raw = _raw_tree(
        tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"], "02": ["sub-02/anat/sub-02_T1w.nii.gz"]}
    )
    out = tmp_path / "out"
    assert _bicubic(raw, out) == 0
    assert _mtsr(raw, out, "group", "--participant-label", "01") == 0
    ids = {line.split("\t")[0] for line in (out / "group_iqms.tsv").read_text().splitlines()[1:]}
    assert ids == {"sub-01"}
    assert _mtsr(raw, out, "group", "--participant-label", "99") == 2
    assert _mtsr(tmp_path / "nowhere", out, "group") == 2


def test_the_group_tsv_has_no_empty_cell(tmp_path):
    from mtsr_monai.reporting.bids_group import write_tsv

    rows = [{"participant_id": "sub-1", "bids_name": "x", "cjv": float("nan"), "outliers": "", "error": None}]
    lines = write_tsv(rows, tmp_path / "g.tsv").read_text().splitlines()
    assert all(cell != "" for line in lines for cell in line.split("\t"))
    assert lines[1].count("n/a") >= 3


def test_the_group_level_reports_only_the_modality_asked_for(tmp_path):
    raw = _raw_tree(
        tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T2w.nii.gz"]}
    )
    out = tmp_path / "out"
    assert _bicubic(raw, out) == 0
    assert _mtsr(raw, out, "group", "--modality", "T2w") == 0
    rows = [line.split("\t") for line in (out / "group_iqms.tsv").read_text().splitlines()]
    suffix = rows[0].index("suffix")
    assert sorted(r[suffix] for r in rows[1:]) == ["T2w", "T2w"]  # its input and its SR output
    # a translation is selected by its source's suffix, as at the participant level, not by its target's
    from mtsr_monai.bids.group import source_suffix

    row = {"role": "output", "suffix": "FLAIR", "source": "sub-01/anat/sub-01_T1w.nii.gz"}
    assert source_suffix(row) == "T1w"


def test_a_participant_busy_in_another_run_makes_the_exit_code_3_and_is_named(tmp_path, capsys):
    from mtsr_monai.bids.runner import participant_lock

    raw = _raw_tree(
        tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"], "02": ["sub-02/anat/sub-02_T1w.nii.gz"]}
    )
    out = tmp_path / "out"
    with participant_lock(out, "super-resolve", "01") as held:
        assert held and _bicubic(raw, out) == 3
    err = capsys.readouterr().err
    assert "1 ok, 1 busy" in err and "busy (held by another run): sub-01" in err
    assert _bicubic(raw, out) == 0  # released: the rerun finishes the cohort
    from mtsr_monai.cli.commands.bids import _code

    assert _code({"failed": 1, "busy": 1}) == 1  # a failure is reported before a busy participant


def test_misnamed_files_are_counted_on_stderr_with_the_run_log_path(tmp_path, capsys):
    raw = _raw_tree(
        tmp_path / "raw",
        {"01": ["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_run-1_acq-x_T2w.nii.gz"]},
    )
    out = tmp_path / "out"
    assert _bicubic(raw, out) == 0
    run_log = next((out / "logs" / "runs").glob("*.json")).resolve()  # the printed path: resolved
    lines = [line for line in capsys.readouterr().err.splitlines() if "BIDS rules" in line]
    assert lines == [
        f"mtsr bids: warning: 1 file(s) ignored for names or places that break the BIDS rules: see {run_log}"
    ]
    assert json.loads(run_log.read_text())["ignored_files"] == ["sub-01/anat/sub-01_run-1_acq-x_T2w.nii.gz"]


def test_clinical_sr_sidecars_name_the_reference_scan_as_their_spatial_reference(tmp_path, monkeypatch):
    from mtsr_monai.inference import clinical

    def restored(inputs, work, **kwargs):  # the session's scans as they are (no registration: seconds)
        return {m: shutil.copy(path, Path(work) / f"{m}.nii.gz") for m, path in inputs.items()}

    monkeypatch.setattr(clinical, "restore_clinical", restored)
    raw = _raw_tree(
        tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_FLAIR.nii.gz"]}
    )
    out = tmp_path / "out"
    args = ["--task", "clinical-sr", "--clinical-method", "trilinear"]
    assert _mtsr(raw, out, "participant", *args) == 0
    sidecars = sorted(out.glob("sub-01/anat/*_desc-mtsrClinicalSRTrilinear_*.json"))
    assert len(sidecars) == 2 and not list(out.glob("sub-01/anat/*_desc-mtsrClinicalSR_*"))  # the model's
    for path in sidecars:  # the T1w was moved onto the FLAIR (the reference): it is in the FLAIR's space
        assert json.loads(path.read_text())["SpatialReference"] == "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz"
    assert _bicubic(raw, out) == 0  # the other tasks' outputs stay in their own source's space
    sr = json.loads(next(out.glob("sub-01/anat/*_desc-mtsrSRBicubic_T1w.json")).read_text())
    assert sr["SpatialReference"] == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"


def test_the_sr_sidecars_slice_axis_is_the_one_the_inference_call_resolved(tmp_path, monkeypatch):
    from mtsr_monai.inference import super_resolve

    original = super_resolve.super_resolve_file

    def reports_coronal(*args, **kwargs):  # no header is read again: the call's answer is the sidecar's
        return {**original(*args, **kwargs), "slice_axis": 1, "slice_plane": "coronal"}

    monkeypatch.setattr(super_resolve, "super_resolve_file", reports_coronal)
    raw = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})
    assert _bicubic(raw, tmp_path / "out") == 0
    sidecar = json.loads(
        next((tmp_path / "out").glob("sub-01/anat/*_desc-mtsrSRBicubic_T1w.json")).read_text()
    )
    assert sidecar["SliceAxis"] == {"ArrayAxis": 1, "Plane": "coronal"}
    monkeypatch.undo()
    lr = write_nifti(
        tmp_path / "lr.nii.gz", np.random.default_rng(0).random((4, 8, 8)), np.diag([4, 1, 1, 1])
    )
    for bundle in (None, "mtsr_sr"):  # the interpolation shortcut and the bundle's path
        summary = super_resolve.super_resolve_file(
            str(lr), str(tmp_path / "sr.nii.gz"), method="bicubic", axis="auto", bundle=bundle, progress=False
        )
        assert (summary["slice_axis"], summary["slice_plane"]) == (0, "sagittal")  # the thick axis


def test_the_packages_input_warnings_are_recorded_for_every_image_and_others_shown():
    import warnings

    import mtsr_monai
    from mtsr_monai.bids.tasks import _input_warnings

    own = str(Path(mtsr_monai.__file__).parent / "inference" / "translate.py")
    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *rest, **kw: shown.append(str(message))
        for _image in range(2):
            noted: list[str] = []
            with _input_warnings(noted):
                warnings.warn_explicit(
                    "6 mm pixels", UserWarning, own, 10, module="mtsr_monai.inference.translate"
                )
                warnings.warn_explicit("a library's", UserWarning, "/lib/x.py", 5, module="lib.x")
            assert noted == ["6 mm pixels"]
    assert shown and set(shown) == {"a library's"}


def test_translating_a_named_modality_without_weights_is_refused_before_any_participant():
    from mtsr_monai.bids.tasks import TranslateTask
    from mtsr_monai.errors import InputError

    with pytest.raises(InputError, match="no weights to translate --modality T2w to FLAIR"):
        TranslateTask(suffixes=["T1w", "T2w"], target="FLAIR")
    assert TranslateTask(suffixes=["T1w"], target="FLAIR").suffixes == ["T1w"]


def test_the_group_level_writes_nothing_into_another_tools_dataset(tmp_path):
    raw = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})
    other = tmp_path / "fmriprep"
    other.mkdir()
    (other / "dataset_description.json").write_text('{"Name": "x", "GeneratedBy": [{"Name": "fmriprep"}]}')
    assert _mtsr(raw, other, "group") == 2
    assert [p.name for p in other.iterdir()] == ["dataset_description.json"]


def test_the_group_report_counts_a_participant_failing_two_tasks_once(tmp_path):
    from mtsr_monai.reporting.bids_group import write_group_report

    rows = [{"participant_id": "sub-1", "bids_name": "x", "role": "input", "group": "T1w", "cjv": 0.5}]
    failures = [{"participant_id": "sub-2", "task": t, "reason": "r"} for t in ("qc", "translate")]
    html = write_group_report(rows, failures, tmp_path)["html"].read_text()
    assert "1 failed participant(s) (2 failed task run(s))" in html


def test_a_session_without_the_asked_modality_fails_whatever_else_it_holds(tmp_path):
    ses = "sub-01/ses-{0}/anat/sub-01_ses-{0}"
    files = [ses.format(1) + "_T1w.nii.gz", ses.format(1) + "_FLAIR.nii.gz", ses.format(2) + "_T1w.nii.gz"]
    raw = _raw_tree(tmp_path / "raw", {"01": files})
    out = tmp_path / "out"
    assert _bicubic(raw, out, "--modality", "FLAIR") == 1
    assert "missing modality FLAIR in session 2" in (out / "logs" / "failures.tsv").read_text()


def test_a_filter_file_picks_the_run_clinical_sr_fuses_and_is_recorded_in_the_run_log(tmp_path, monkeypatch):
    from mtsr_monai.inference import clinical

    fused = []

    def restored(inputs, work, **kwargs):
        fused.append(sorted(Path(p).name for p in inputs.values()))
        return {m: shutil.copy(path, Path(work) / f"{m}.nii.gz") for m, path in inputs.items()}

    monkeypatch.setattr(clinical, "restore_clinical", restored)
    anat = "sub-01/anat/sub-01"
    files = [f"{anat}_T1w.nii.gz", f"{anat}_run-01_FLAIR.nii.gz", f"{anat}_run-02_FLAIR.nii.gz"]
    raw = _raw_tree(tmp_path / "raw", {"01": files})
    args = ["participant", "--task", "clinical-sr", "--clinical-method", "trilinear"]
    assert _mtsr(raw, tmp_path / "out", *args) == 1  # two FLAIR runs: which one is the user's choice
    assert "--bids-filter-file" in (tmp_path / "out" / "logs" / "failures.tsv").read_text()
    chosen = tmp_path / "filter.json"
    chosen.write_text('{"flair": {"datatype": "anat", "run": 2}, "T1w": {"acquisition": null}}')
    assert _mtsr(raw, tmp_path / "out", *args, "--bids-filter-file", chosen) == 0
    assert fused == [["sub-01_T1w.nii.gz", "sub-01_run-02_FLAIR.nii.gz"]]
    log = json.loads(max((tmp_path / "out" / "logs" / "runs").glob("*.json")).read_text())
    assert log["bids_filters"] == {"FLAIR": {"run": ["2"]}, "T1w": {"acq": [None]}}


@pytest.mark.parametrize(
    "text",
    ['{"fliar": {"run": 1}}', '{"flair": {"runs": 1}}', '{"flair": {"run": 1.5}}', '{"flair": 2}', "[1]"],
)
def test_a_bad_filter_file_is_refused_before_any_output(tmp_path, text):
    raw = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})
    bad = tmp_path / "filter.json"
    bad.write_text(text)
    assert _bicubic(raw, tmp_path / "out", "--bids-filter-file", bad) == 2
    assert not (tmp_path / "out").exists()


def test_filters_compare_numeric_labels_as_numbers_and_null_as_absent():
    from mtsr_monai.bids.filters import passes
    from mtsr_monai.bids.layout import BIDSImage

    def image(*entities):
        return BIDSImage(Path("x"), "x", (("sub", "01"), *entities), "FLAIR")

    rules = {"FLAIR": {"run": ("1",), "acq": (None, "fast")}}
    assert passes(image(("run", "01")), rules) and passes(image(("acq", "fast"), ("run", "1")), rules)
    assert not passes(image(("run", "2")), rules) and not passes(image(("acq", "slow"), ("run", "1")), rules)
    assert not passes(image(), rules)  # no run entity where run 1 is asked
    assert passes(image(("run", "7")), {"T1w": {"run": ("1",)}})  # no query for FLAIR: kept
    assert passes(image(("acq", "axial")), {"FLAIR": {"acq": ("*",)}}) and not passes(
        image(), {"FLAIR": {"acq": ("*",)}}
    )


def test_a_filter_file_written_for_fmriprep_is_read_for_its_anatomical_queries(tmp_path):
    from mtsr_monai.bids.filters import read_bids_filters

    path = tmp_path / "filter.json"
    path.write_text('{"t1w": {"session": "1"}, "bold": {"task": "rest"}, "fmap": {"run": 1}}')
    assert read_bids_filters(path) == {"T1w": {"ses": ("1",)}}


def test_a_filter_label_no_scan_has_is_bad_input_and_a_contrast_it_takes_from_a_participant_is_warned(
    tmp_path, capsys
):
    raw = _raw_tree(
        tmp_path / "raw",
        {
            "01": ["sub-01/anat/sub-01_acq-ax_T1w.nii.gz", "sub-01/anat/sub-01_FLAIR.nii.gz"],
            "02": ["sub-02/anat/sub-02_acq-ax_T1w.nii.gz", "sub-02/anat/sub-02_run-02_FLAIR.nii.gz"],
        },
    )
    typo = tmp_path / "typo.json"
    typo.write_text('{"t1w": {"acquisition": "axial"}}')  # the label is "ax": every T1w would vanish
    assert _bicubic(raw, tmp_path / "out", "--bids-filter-file", typo) == 2
    assert "keeps none of the dataset's T1w images" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    run2 = tmp_path / "run2.json"
    run2.write_text('{"flair": {"run": 2}}')
    assert _bicubic(raw, tmp_path / "out", "--bids-filter-file", run2) == 0
    assert "sub-01: the --bids-filter-file leaves out its every FLAIR" in capsys.readouterr().err
    # one job per participant: the whole dataset decides whether a label exists, not the job's share
    assert _bicubic(raw, tmp_path / "out1", "--bids-filter-file", run2, "--participant-label", "01") == 0
    # a contrast the run does not use may be filtered out entirely
    assert _bicubic(raw, tmp_path / "out2", "--bids-filter-file", typo, "--modality", "FLAIR") == 0


def test_a_run_with_nothing_to_process_is_bad_input_and_writes_nothing(tmp_path, capsys):
    raw = _raw_tree(tmp_path / "raw", {"01": ["sub-01/anat/sub-01_T1w.nii.gz"]})
    out = tmp_path / "out"
    assert _mtsr(raw, out, "participant", "--task", "translate", "--target", "T1w") == 2  # no source scan
    assert "nothing to process" in capsys.readouterr().err
    assert not list(out.rglob("*.json"))


def test_a_subjects_anat_beside_its_session_folders_is_reported_not_silently_dropped(tmp_path):
    from mtsr_monai.bids.layout import read_dataset

    raw = _raw_tree(
        tmp_path / "raw",
        {"01": ["sub-01/anat/sub-01_T2w.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"]},
    )
    (raw / "sub-01" / "anat" / "._sub-01_T2w.nii.gz").write_bytes(b"")  # a hidden file: skipped, as elsewhere
    dataset = read_dataset(raw)
    assert [im.suffix for im in dataset.subjects["01"]] == ["T1w"]
    assert dataset.ignored == ["sub-01/anat/sub-01_T2w.nii.gz"]


def test_translate_slices_axially_and_super_resolve_in_the_acquisition_plane_unless_told(tmp_path):
    from mtsr_monai.cli import build_parser
    from mtsr_monai.cli.commands.bids import _task

    base = ["bids", str(tmp_path), str(tmp_path / "out"), "participant", "--task"]
    for task, extra, axis in (
        ("translate", [], "axial"),  # as mtsr translate
        ("super-resolve", [], "auto"),  # as mtsr super-resolve
        ("translate", ["--axis", "coronal"], "coronal"),
    ):
        assert _task(build_parser().parse_args([*base, task, *extra]), "cpu").axis == axis
