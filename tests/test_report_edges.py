"""Reports stay right at their edges: a subject's own label, one figure file per subject, escaped names,
one TSV line per row, a one-sample demo."""

from __future__ import annotations

from mtsr_monai.bids.group import report_intro
from mtsr_monai.reporting.bids_group import _tsv_cell
from mtsr_monai.reporting.clinical import figure_stem, find_label
from mtsr_monai.reporting.demo_report import diversity_line


def test_a_subjects_label_is_its_own_not_one_whose_name_starts_alike(tmp_path):
    for name in ("sub10_seg.nii.gz", "sub1_seg.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    assert find_label(tmp_path, "sub1_flair").name == "sub1_seg.nii.gz"


def test_each_case_of_a_brats_download_gets_the_label_in_its_own_folder(tmp_path):
    import pytest

    from mtsr_monai.errors import InputError

    for case in ("Brats18_A_1", "Brats18_B_1"):  # HGG/<case>/<case>_{flair,seg}.nii.gz
        (tmp_path / "HGG" / case).mkdir(parents=True)
        (tmp_path / "HGG" / case / f"{case}_seg.nii.gz").write_bytes(b"")
    assert find_label(tmp_path, "HGG/Brats18_B_1/Brats18_B_1_flair").parent.name == "Brats18_B_1"
    (tmp_path / "sub1" / "ses2").mkdir(parents=True)
    (tmp_path / "sub1" / "seg.nii.gz").write_bytes(b"")  # one label for the subject's sessions
    assert find_label(tmp_path, "sub1/ses2/flair") == tmp_path / "sub1" / "seg.nii.gz"
    (tmp_path / "sub1" / "ses2" / "seg.nii.gz").write_bytes(b"")  # the session's own comes first
    assert find_label(tmp_path, "sub1/ses2/flair") == tmp_path / "sub1" / "ses2" / "seg.nii.gz"
    (tmp_path / "sub1" / "ses2" / "seg_manual.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="several tumour labels"):
        find_label(tmp_path, "sub1/ses2/flair")


def test_keys_that_clean_up_alike_get_their_own_figure_files():
    keys = ["sub01/flair", "sub01_flair", "pat (a)", "pat [a]"]
    assert len({figure_stem(k) for k in keys}) == len(keys)


def test_the_group_report_escapes_the_dataset_name():
    assert "Cohort &lt;pilot&gt; &amp; T1&lt;FLAIR" in report_intro("Cohort <pilot> & T1<FLAIR", ["qc"])


def test_a_multi_line_value_stays_in_one_tsv_cell():
    assert _tsv_cell("line1\nline2\tx\r\ny") == "line1 line2 x y"


def test_one_demo_sample_shows_no_diversity_rather_than_zero():
    line = diversity_line({"lpips_realism": 0.2}, {"available": True, "net": "alex"})
    assert line.count("n/a (one sample)") == 3 and "0.0000" not in line


def test_the_reference_named_like_the_subjects_key_is_not_taken_for_its_label(tmp_path):
    case = tmp_path / "case1"  # BraTS's layout: the FLAIR and its tumour label side by side
    case.mkdir()
    (case / "FLAIR.nii.gz").write_bytes(b"the image")
    (case / "GT_W.nii.gz").write_bytes(b"the label")
    assert find_label(tmp_path, "case1/FLAIR", case / "FLAIR.nii.gz").name == "GT_W.nii.gz"
    copy = tmp_path / "refs" / "case1"  # a references folder of its own, holding a copy
    copy.mkdir(parents=True)
    (copy / "FLAIR.nii.gz").write_bytes(b"the image")
    assert find_label(tmp_path, "case1/FLAIR", copy / "FLAIR.nii.gz").name == "GT_W.nii.gz"
    (tmp_path / "case2.nii.gz").write_bytes(b"a soft label, resampled")  # any label named like its key
    assert find_label(tmp_path, "case2", tmp_path / "refs" / "case2.nii.gz").name == "case2.nii.gz"


def test_a_method_called_reference_is_refused(tmp_path):
    import pytest

    from mtsr_monai.errors import InputError
    from mtsr_monai.reporting.clinical import _method_names

    with pytest.raises(InputError, match="reference"):
        _method_names(["reference", "b"], [tmp_path, tmp_path / "x"], None)


def test_the_clinical_report_names_the_segmentations_class_count():
    from mtsr_monai.reporting.html import render_template

    for n, words in ((3, "three-class"), (4, "four-class")):
        page = render_template("clinical_report.html.j2", n_classes=n, subject_figures=[])
        assert words in page and ("PIAL" in page) == (n == 4)
