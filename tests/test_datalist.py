"""Datalists: layout detection, modality names, seeded subject split, the mtsr datalist command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtsr_monai.cli import main
from mtsr_monai.data.datalist import (
    build_datalist,
    detect_layout,
    find_subjects,
    modality_from_name,
    split_counts,
)
from mtsr_monai.errors import InputError


def touch(root: Path, *names: str) -> None:
    # finding subjects reads names only, so empty files are enough
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def test_brats_2018_and_2023_names_map_to_the_same_keys(tmp_path: Path) -> None:
    touch(tmp_path, *[f"Brats18_X_1/Brats18_X_1_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair", "seg")])
    touch(
        tmp_path,
        *[f"BraTS-GLI-00001-000/BraTS-GLI-00001-000-{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f", "seg")],
    )
    assert detect_layout(tmp_path) == "brats"
    subjects = find_subjects(tmp_path)
    assert [s["subject"] for s in subjects] == ["BraTS-GLI-00001-000", "Brats18_X_1"]
    for s in subjects:
        assert set(s) == {"subject", "t1", "t1ce", "t2", "flair", "label"}
    assert subjects[0]["flair"].endswith("-t2f.nii.gz") and subjects[1]["t1"].endswith("_t1.nii.gz")


def test_ixi_prefix_is_accepted_and_masks_are_not_images(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "hd_bet_IXI002-Guys-0828-T1.nii.gz",
        "hd_bet_IXI002-Guys-0828-T2.nii.gz",
        "hd_bet_mask_IXI002-Guys-0828-T1.nii.gz",
        "hd_bet_mask_IXI002-Guys-0828-T2.nii.gz",
        "IXI012-HH-1211-PD.nii.gz",
    )
    assert detect_layout(tmp_path) == "ixi"
    s002, s012 = find_subjects(tmp_path)
    assert s002["subject"] == "IXI002-Guys-0828"
    assert "mask" not in Path(s002["t1"]).name and "mask" not in Path(s002["t2"]).name
    assert Path(s002["brain_mask"]).name == "hd_bet_mask_IXI002-Guys-0828-T1.nii.gz"
    assert Path(s002["brain_mask_t2"]).name == "hd_bet_mask_IXI002-Guys-0828-T2.nii.gz"
    assert set(s012) == {"subject", "pd"}


def test_bids_sessions_become_subjects_and_derivatives_are_ignored(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "sub-01/ses-a/anat/sub-01_ses-a_T1w.nii.gz",
        "sub-01/ses-a/anat/sub-01_ses-a_FLAIR.nii.gz",
        "sub-02/anat/sub-02_T2w.nii.gz",
        "derivatives/x/sub-03/anat/sub-03_T1w.nii.gz",
        "sourcedata/sub-02/anat/sub-02_T2w.nii.gz",  # sorts before sub-02: it would be taken first
        "sourcedata/sub-99/anat/sub-99_T1w.nii.gz",
        "code/sub-98/anat/sub-98_T1w.nii.gz",
        "sub-02/derivatives/x/sub-02/anat/sub-02_T2w.nii.gz",  # below the top level too
    )
    assert detect_layout(tmp_path) == "bids"
    subjects = find_subjects(tmp_path)
    assert [s["subject"] for s in subjects] == ["sub-01_ses-a", "sub-02"]
    assert set(subjects[0]) == {"subject", "t1", "flair"} and set(subjects[1]) == {"subject", "t2"}
    assert "sourcedata" not in subjects[1]["t2"] and "derivatives" not in subjects[1]["t2"]


def test_a_bids_scan_named_for_another_subject_or_session_is_not_paired_with_its_folder(tmp_path: Path):
    touch(
        tmp_path,
        "sub-02/anat/sub-02_FLAIR.nii.gz",
        "sub-02/anat/sub-03_T1w.nii.gz",  # another person's T1 filed under sub-02
        "sub-04/ses-1/anat/sub-04_ses-2_T1w.nii.gz",
        "sub-04/ses-1/anat/sub-04_ses-1_FLAIR.nii.gz",
    )
    with pytest.warns(UserWarning, match="entities disagree with its folders"):
        subjects = find_subjects(tmp_path, "bids")
    assert [sorted(s) for s in subjects] == [["flair", "subject"], ["flair", "subject"]]


def test_a_bids_t1w_with_a_contrast_agent_is_t1ce_beside_the_native_t1(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "sub-02/anat/sub-02_acq-pre_T1w.nii.gz",
        "sub-02/anat/sub-02_acq-post_ce-gadolinium_T1w.nii.gz",
    )
    (subject,) = find_subjects(tmp_path, layout="bids")
    assert subject["t1"].endswith("acq-pre_T1w.nii.gz") and subject["t1ce"].endswith(
        "ce-gadolinium_T1w.nii.gz"
    )


def test_a_brats_case_with_a_label_alone_is_no_subject(tmp_path: Path) -> None:
    touch(tmp_path, "A/A_t1.nii.gz", "A/A_seg.nii.gz", "B/B_seg.nii.gz")
    assert [s["subject"] for s in find_subjects(tmp_path, layout="brats")] == ["A"]


def test_folders_layout_reads_modality_from_stem_with_aliases(tmp_path: Path) -> None:
    touch(tmp_path, "caseA/T1.nii.gz", "caseA/FLAIR.nii.gz", "caseA/GT_W.nii.gz", "caseA/t1gd.nii.gz")
    touch(
        tmp_path, "caseB/study1_T1W.nii.gz", "caseB/study1_T2W.nii.gz", "caseB/notes.txt", "caseB/dwi.nii.gz"
    )
    assert detect_layout(tmp_path) == "folders"
    a, b = find_subjects(tmp_path)
    assert set(a) == {"subject", "t1", "flair", "label", "t1ce"}
    assert set(b) == {"subject", "t1", "t2"}


def test_a_scanner_series_name_gives_the_one_sequence_it_names() -> None:
    assert modality_from_name("MRHR_FLAIR_AX_SE_IR_5_tir2d1_21_fla") == "flair"  # TCGA-LGG's raw FLAIR
    assert modality_from_name("MRHR_T1_AX_POST_GAD_SE_13_se2d1r_t1c") == "t1ce"  # the last token decides
    assert modality_from_name("T1_vs_FLAIR_difference") is None  # two sequences named: neither is guessed
    assert modality_from_name("scan_0001") is None
    for enhanced in ("s1_t1_post_gad", "T1_post_contrast", "T1w_Gd"):  # a contrast agent named beside T1
        assert modality_from_name(enhanced) == "t1ce", enhanced
    for plain in ("s1_T1W", "T1_pre_contrast", "T1_AX_PRE_GAD", "T1w_non_contrast", "T1_post_op"):
        assert modality_from_name(plain) == "t1", plain


def test_a_session_file_without_a_sequence_name_is_reported_not_dropped(tmp_path: Path) -> None:
    from mtsr_monai.inference.bundle import find_sessions

    touch(tmp_path, "s1/flair.nii.gz", "s1/scan_0001.nii.gz")
    with pytest.warns(UserWarning, match="scan_0001"):
        sessions = find_sessions(tmp_path)
    assert [sorted(k for k in s if k != "session") for s in sessions] == [["flair"]]


def test_a_second_scan_of_one_sequence_in_a_session_is_reported_not_dropped(tmp_path: Path) -> None:
    from mtsr_monai.inference.bundle import find_sessions

    touch(tmp_path, "s1/s1_flair.nii.gz", "s1/s1_flair_run-2.nii.gz", "s1/s1_t1w.nii.gz")
    with pytest.warns(UserWarning, match="s1_flair_run-2.nii.gz: not used, flair is already s1_flair.nii.gz"):
        (session,) = find_sessions(tmp_path)
    assert Path(session["flair"]).name == "s1_flair.nii.gz"


def test_split_is_by_subject_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    touch(tmp_path, *[f"s{i:02d}/t1.nii.gz" for i in range(20)])
    first = build_datalist(tmp_path, seed=3)
    again = build_datalist(tmp_path, seed=3)
    other = build_datalist(tmp_path, seed=4)
    ids = {part: [s["subject"] for s in first[part]] for part in ("training", "validation", "test")}
    assert ids == {part: [s["subject"] for s in again[part]] for part in ids}
    assert ids["training"] != [s["subject"] for s in other["training"]]
    everyone = ids["training"] + ids["validation"] + ids["test"]
    assert sorted(everyone) == [f"s{i:02d}" for i in range(20)] and len(set(everyone)) == 20
    assert (first["numTraining"], first["numValidation"], first["numTest"]) == (13, 4, 3)


def test_every_session_of_a_bids_participant_lands_in_one_split(tmp_path: Path) -> None:
    touch(
        tmp_path,
        *[f"sub-{i:02d}/ses-{s}/anat/sub-{i:02d}_ses-{s}_T1w.nii.gz" for i in range(10) for s in (1, 2)],
    )
    datalist = build_datalist(tmp_path, seed=0)
    splits = {
        p: {s["subject"].split("_ses-")[0] for s in datalist[p]} for p in ("training", "validation", "test")
    }
    assert all(
        splits[a].isdisjoint(splits[b])
        for a, b in (("training", "validation"), ("training", "test"), ("validation", "test"))
    )
    assert sum(map(len, splits.values())) == 10 and datalist["numTraining"] % 2 == 0


def test_few_subjects_still_fill_every_nonzero_split() -> None:
    assert split_counts(3, (0.66, 0.18, 0.16)) == [1, 1, 1]
    assert split_counts(4, (0.66, 0.18, 0.16)) == [2, 1, 1]
    assert split_counts(10, (1.0, 0.0, 0.0)) == [10, 0, 0]
    assert split_counts(1, (0.66, 0.18, 0.16)) == [1, 0, 0]


def test_require_keeps_only_complete_subjects(tmp_path: Path) -> None:
    touch(tmp_path, "a/t1.nii.gz", "a/flair.nii.gz", "b/t1.nii.gz")
    d = build_datalist(tmp_path, ratios=(1, 0, 0), require=["t1", "flair"])
    assert [s["subject"] for s in d["training"]] == ["a"]
    with pytest.raises(InputError, match="has all of pd"):
        build_datalist(tmp_path, require=["pd"])
    with pytest.raises(InputError, match="unknown key bogus"):  # a typo is named, not taken as missing data
        build_datalist(tmp_path, require=["t1", "bogus"])


def test_cli_writes_relative_datalist_monai_can_load(tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist

    touch(tmp_path / "data", *[f"s{i}/T1.nii.gz" for i in range(5)])
    out = tmp_path / "lists" / "dl.json"
    assert (
        main(["datalist", "--root", str(tmp_path / "data"), "-o", str(out), "--relative", "--seed", "1"]) == 0
    )
    raw = json.loads(out.read_text())
    assert not Path(raw["training"][0]["t1"]).is_absolute()
    loaded = load_decathlon_datalist(out, data_list_key="training")
    assert all(Path(s["t1"]).is_file() for s in loaded)


@pytest.mark.parametrize(
    "extra",
    [
        ["--root", "/nonexistent/folder"],
        ["--ratios", "0.5", "0.5", "0.5"],
        ["--ratios", "-0.2", "0.6", "0.6"],
    ],
)
def test_cli_refuses_bad_input_with_exit_2_and_no_output(tmp_path: Path, extra: list[str]) -> None:
    touch(tmp_path, "s0/t1.nii.gz")
    out = tmp_path / "dl.json"
    args = ["datalist", "--root", str(tmp_path), "-o", str(out)] + extra
    assert main(args) == 2
    assert not out.exists()


def test_cli_never_overwrites_a_scan_or_sidecar_of_the_dataset(tmp_path: Path) -> None:
    touch(tmp_path, *[f"s{i}/t1.nii.gz" for i in range(3)])
    scan, sidecar = tmp_path / "s0" / "t1.nii.gz", tmp_path / "s0" / "t1.json"
    scan.write_bytes(b"scan"), sidecar.write_text('{"RepetitionTime": 2.0}')
    assert main(["datalist", "--root", str(tmp_path), "-o", str(scan)]) == 2
    assert main(["datalist", "--root", str(tmp_path), "-o", str(sidecar)]) == 2
    assert scan.read_bytes() == b"scan" and json.loads(sidecar.read_text()) == {"RepetitionTime": 2.0}
    datalist = tmp_path / "dl.json"
    assert main(["datalist", "--root", str(tmp_path), "-o", str(datalist)]) == 0
    assert main(["datalist", "--root", str(tmp_path), "-o", str(datalist), "--seed", "1"]) == 0  # its own


def test_cli_refuses_a_folder_without_subjects(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["datalist", "--root", str(tmp_path / "empty"), "-o", str(tmp_path / "x.json")]) == 2


def test_real_brats_and_ixi_folders(shared_data: Path) -> None:
    brats = build_datalist(shared_data / "brats2018_tcia")
    assert brats["layout"] == "brats" and brats["keys"] == {
        k: 10 for k in ("flair", "label", "t1", "t1ce", "t2")
    }
    ixi = find_subjects(shared_data / "ixi002_cai4cai_hdbet")
    assert len(ixi) == 1 and {"t1", "t2", "brain_mask"} <= set(ixi[0])
    folders = build_datalist(shared_data / "brats2018_t1_flair")
    assert folders["layout"] == "folders" and folders["keys"] == {"flair": 7, "label": 7, "t1": 7}


def test_cli_notices_are_one_line_warnings_named_after_the_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    touch(tmp_path / "data", "s1/T1.nii.gz", "s1/t1w.nii.gz")
    argv = ["datalist", "--root", str(tmp_path / "data"), "-o", str(tmp_path / "dl.json")]
    code = (
        f"from mtsr_monai.cli import main; raise SystemExit(main({argv!r}))"  # pytest would catch the warning
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "mtsr datalist: warning: subject s1: t1w.nii.gz ignored" in done.stderr
    assert "UserWarning" not in done.stderr


def test_a_missing_relative_file_names_the_folders_it_was_looked_for_in(tmp_path, monkeypatch):
    from mtsr_monai.data.datalist import read_split

    (tmp_path / "lists").mkdir()
    datalist = tmp_path / "lists" / "d.json"
    datalist.write_text(json.dumps({"training": [{"t1": "brats/a_t1.nii.gz"}]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        InputError, match=r"brats/a_t1.nii.gz: no such file \(relative paths are read from .*lists"
    ):
        read_split(datalist, "training")


@pytest.mark.parametrize("split", ["test", "validation"])
def test_an_empty_split_reads_as_no_subjects(tmp_path, split):
    from mtsr_monai.data.datalist import read_split

    datalist = tmp_path / "d.json"
    datalist.write_text(json.dumps({"training": [], "validation": [], "test": []}))
    assert read_split(datalist, split) == []


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_numpy_cannot_take_is_refused_by_the_parser(tmp_path: Path, seed: str) -> None:
    touch(tmp_path, "s0/t1.nii.gz")
    with pytest.raises(SystemExit) as stop:
        main(["datalist", "--root", str(tmp_path), "-o", str(tmp_path / "dl.json"), "--seed", seed])
    assert stop.value.code == 2 and not (tmp_path / "dl.json").exists()


def test_a_relative_datalist_written_through_a_symlinked_folder_is_read_as_monai_reads_it(
    tmp_path: Path,
) -> None:
    from mtsr_monai.data.preprocess import read_datalist

    touch(tmp_path, "data/s0/t1.nii.gz")
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "lists").symlink_to(tmp_path / "real" / "deep")  # a home or scratch folder behind a link
    out = tmp_path / "lists" / "dl.json"
    assert (
        main(
            [
                "datalist",
                "--root",
                str(tmp_path / "data"),
                "-o",
                str(out),
                "--relative",
                "--ratios",
                "1",
                "0",
                "0",
            ]
        )
        == 0
    )
    (subject,) = read_datalist(out)
    assert Path(subject["t1"]).is_file()
