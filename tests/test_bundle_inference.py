"""``python -m monai.bundle run inference`` and the ``mtsr`` commands give the same volumes for each bundle
(they build the same preprocessing / inferer / postprocessing), on small synthetic scans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mtsr_monai.cli import main as cli_main
from tests.conftest import REPO, write_nifti


def _scan(
    path: Path, shape: tuple[int, int, int], zooms: tuple[float, float, float], outer: float, inner: float
):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = x**2 + y**2 + z**2
    rng = np.random.default_rng(int(outer))
    vol = np.where(r < 0.8, outer + 20 * np.sin(9 * x) + 5 * rng.standard_normal(shape), 0) + np.where(
        r < 0.4, inner, 0
    )
    return write_nifti(path, vol.astype(np.float32), np.diag([*zooms, 1.0]))


def _bundle_inference(bundle: str, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    configs = REPO / "bundles" / bundle / "configs"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "inference",
        "--config_file",
        str(configs / "inference.yaml"),
    ]
    cmd += [
        "--meta_file",
        str(configs / "metadata.json"),
        "--bundle_root",
        str(REPO / "bundles" / bundle),
        *args,
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="2")
    )
    assert done.returncode == code, done.stderr[-3000:]
    return done


def _same(a: Path, b: Path) -> None:
    x, y = nib.load(str(a)), nib.load(str(b))
    assert x.shape == y.shape
    np.testing.assert_allclose(x.affine, y.affine, atol=1e-6)
    np.testing.assert_allclose(x.get_fdata(), y.get_fdata(), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_sr_bundle_inference_equals_mtsr_super_resolve(tmp_path):
    scans = tmp_path / "in"
    scans.mkdir()
    lr = _scan(scans / "lr.nii.gz", (20, 24, 3), (1.2, 1.0, 3.0), 300, 200)
    _bundle_inference("mtsr_sr", "--dataset_dir", str(scans), "--output_dir", str(tmp_path / "bundle"))
    assert cli_main(["super-resolve", "--input", str(lr), "--output", str(tmp_path / "cli.nii.gz")]) == 0
    _same(tmp_path / "bundle" / "lr_sr.nii.gz", tmp_path / "cli.nii.gz")
    assert nib.load(str(tmp_path / "cli.nii.gz")).shape == (80, 96, 3)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["flair", "t2"])  # t2's weights carry a tissue_prior and a code_prior
def test_mt_bundle_inference_equals_mtsr_translate(tmp_path, target):
    scans = tmp_path / "in"
    scans.mkdir()
    t1 = _scan(scans / "a_t1.nii.gz", (40, 48, 3), (1.0, 1.0, 1.0), 300, 200)
    args = ["--samples", "2", "--seed", "3"]
    out = ["--output_dir", str(tmp_path / "bundle"), "--target", target]
    _bundle_inference("mtsr_mt", "--dataset_dir", str(scans), *out, *args)
    cli = [
        "translate",
        "--input",
        str(t1),
        "--source",
        "t1",
        "--target",
        target,
        "--output-dir",
        str(tmp_path / "cli"),
    ]
    assert cli_main([*cli, *args]) == 0
    for name in ("sample_0", "sample_1", "mean", "std"):
        _same(tmp_path / "bundle" / "a_t1" / f"{name}.nii.gz", tmp_path / "cli" / f"{name}.nii.gz")
    if target == "flair":  # reduced to the mean: no samples or (zero) spread written, none left from before
        _bundle_inference("mtsr_mt", "--dataset_dir", str(scans), *out, *args, "--reduce", "mean")
        written = sorted(p.name for p in (tmp_path / "bundle" / "a_t1").glob("*.nii.gz"))
        assert [n for n in written if n.startswith(("sample", "std"))] == [] and "mean.nii.gz" in written
        _same(tmp_path / "bundle" / "a_t1" / "mean.nii.gz", tmp_path / "cli" / "mean.nii.gz")


@pytest.mark.slow
def test_clinical_bundle_inference_equals_mtsr_clinical_sr(tmp_path):
    session = tmp_path / "in" / "s1"
    session.mkdir(parents=True)
    flair = _scan(session / "s1_flair.nii.gz", (24, 28, 5), (1.0, 1.0, 4.0), 300, 200)
    t1 = _scan(session / "s1_t1.nii.gz", (24, 28, 5), (1.0, 1.0, 4.0), 150, 400)
    _bundle_inference(
        "clinical_sr", "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "bundle")
    )
    cli = [
        "clinical-sr",
        "--flair",
        str(flair),
        "--t1",
        str(t1),
        "--spacing",
        "1",
        "--output-dir",
        str(tmp_path / "cli"),
    ]
    assert cli_main(cli) == 0
    gains = [
        v["gain"]
        for v in json.loads((tmp_path / "cli" / "clinical_sr.json").read_text())["consistency"].values()
    ]
    assert all(abs(g - 1.0) > 1e-4 for g in gains), gains  # the gain step ran, so the comparison covers it
    for name in ("flair", "t1"):
        _same(tmp_path / "bundle" / "s1" / f"{name}.nii.gz", tmp_path / "cli" / f"{name}.nii.gz")


def _sr_writer(out: Path):
    from mtsr_monai.transforms.io import SaveVolumed

    return SaveVolumed(keys="pred", output_dir=str(out), postfix="sr")


def test_save_volumed_refuses_two_keys_that_would_write_one_file(tmp_path):
    from mtsr_monai.transforms.io import SaveVolumed

    with pytest.raises(ValueError, match="one key"):  # both would go to <name>_sr.nii.gz, the last one kept
        SaveVolumed(keys=["pred", "image"], output_dir=str(tmp_path), postfix="sr")
    writer = _sr_writer(tmp_path)
    assert writer.output_path({"image": "/scans/a.nii.gz"}) == tmp_path / "a_sr.nii.gz"


def test_save_volumed_refuses_an_image_of_several_channels_rather_than_write_the_first(tmp_path):
    writer = _sr_writer(tmp_path)
    two = np.ones((2, 4, 5, 6), np.float32)
    with pytest.raises(ValueError, match="2 channels"):
        writer({"pred": two, "image": str(tmp_path / "a.nii.gz")})
    assert not (tmp_path / "a_sr.nii.gz").exists()


def test_a_bundle_run_refuses_an_output_over_an_input_before_writing(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import guard_bundle_outputs, volume_files

    scans = tmp_path / "in"
    scans.mkdir()
    a = _scan(scans / "a.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)
    a_sr = _scan(scans / "a_sr.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 100, 50)
    before = a_sr.read_bytes()
    datalist = [{"image": f} for f in volume_files(scans)]
    with pytest.raises(InputError, match="overwrite the input"):
        guard_bundle_outputs(datalist, _sr_writer(scans))
    assert a_sr.read_bytes() == before and a.is_file()


def test_a_bundle_run_refuses_to_write_among_the_scans_it_reads(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import guard_bundle_outputs, volume_files

    scans = tmp_path / "in"
    scans.mkdir()
    _scan(scans / "a.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)
    datalist = [{"image": f} for f in volume_files(scans)]
    with pytest.raises(InputError, match="among the scans of --dataset_dir"):
        guard_bundle_outputs(datalist, _sr_writer(scans), dataset_dir=scans)
    assert sorted(p.name for p in scans.iterdir()) == ["a.nii.gz"]


def test_a_clinical_bundle_run_refuses_to_write_into_the_sessions_it_reads(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import guard_bundle_outputs
    from mtsr_monai.inference.components import SaveClinicald

    session = tmp_path / "sub1"
    session.mkdir()
    flair = _scan(session / "flair.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)
    writer = SaveClinicald(keys="pred", output_dir=str(tmp_path))
    with pytest.raises(InputError, match="among the scans of --dataset_dir"):
        guard_bundle_outputs([{"session": "sub1_out", "flair": str(flair)}], writer, dataset_dir=tmp_path)


def test_a_clinical_session_without_a_name_is_planned_in_its_reference_scans_folder(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import guard_bundle_outputs
    from mtsr_monai.inference.components import SaveClinicald

    (tmp_path / "flair").mkdir()
    flair = _scan(tmp_path / "flair" / "flair.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)
    other = _scan(tmp_path / "flair_b.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)
    writer = SaveClinicald(keys="pred", output_dir=str(tmp_path))
    # written at the end as <output_dir>/flair/flair.nii.gz: the input itself
    with pytest.raises(InputError, match="input"):
        guard_bundle_outputs([{"flair": str(flair)}], writer)
    plan = writer.planned_outputs({"t1": "x/t1_a.nii.gz", "flair": str(other)})
    assert plan.folders == [tmp_path / "flair_b"]  # FLAIR before T1, as the preprocessing picks
    elsewhere = SaveClinicald(keys="pred", output_dir=str(tmp_path / "out"))
    assert guard_bundle_outputs([{"flair": str(flair)}, {"flair": str(other)}], elsewhere)  # two folders


def test_the_sr_then_translation_bundle_run_refuses_what_mtsr_run_refuses(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.pipeline import pipeline_items

    (tmp_path / "sr").mkdir()
    earlier = _scan(tmp_path / "sr" / "sr.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)
    with pytest.raises(InputError, match="input"):  # <output_dir>/sr/sr.nii.gz is the input itself
        pipeline_items([str(earlier)], tmp_path)
    twins = []
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        twins.append(str(_scan(tmp_path / folder / "lr.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)))
    with pytest.raises(InputError, match="two inputs would write here"):
        pipeline_items(twins, tmp_path / "out")
    with pytest.raises(InputError, match="one mask per input"):
        pipeline_items(twins, tmp_path / "out", [twins[0]])
    (item,) = pipeline_items(twins[:1], tmp_path / "out1")
    assert item == {"image": twins[0], "mask": None, "output": str(tmp_path / "out1" / "lr")}
    assert pipeline_items(twins[:1], tmp_path / "out1") == [
        item
    ]  # a second run of this process: not locked out


def test_a_bad_scan_of_a_later_session_stops_the_bundle_run_before_anything_is_written(tmp_path):
    import nibabel as nib

    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import guard_bundle_outputs
    from mtsr_monai.inference.components import SaveClinicald

    good = _scan(tmp_path / "s1_flair.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)
    image = nib.load(good)
    data = image.get_fdata().astype(np.float32)
    data[0, 0, 0] = np.nan
    bad = tmp_path / "s2_flair.nii.gz"
    nib.save(nib.Nifti1Image(data, image.affine), bad)
    sessions = [{"flair": str(good), "session": "s1"}, {"flair": str(bad), "session": "s2"}]
    with pytest.raises(InputError, match="NaN"):
        guard_bundle_outputs(sessions, SaveClinicald(keys="pred", output_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_a_bundle_run_refuses_two_inputs_that_would_write_one_output(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import guard_bundle_outputs, volume_files
    from mtsr_monai.io import load_volume, save_volume

    scans = tmp_path / "in"
    scans.mkdir()
    volume = load_volume(_scan(tmp_path / "lr.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200))
    for suffix in (".nrrd", ".mha"):
        save_volume(volume, scans / f"lr{suffix}")
    datalist = [{"image": f} for f in volume_files(scans)]
    assert len(datalist) == 2  # ITK files are bundle inputs too
    with pytest.raises(InputError, match="two inputs would write here"):
        guard_bundle_outputs(datalist, _sr_writer(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # the empty output folder it made is removed


def test_a_bundle_run_with_nothing_to_run_on_is_refused(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import find_sessions, guard_bundle_outputs, volume_files

    with pytest.raises(InputError, match="no such folder"):
        volume_files(tmp_path / "missing")
    with pytest.raises(InputError, match="no such folder"):
        find_sessions(tmp_path / "missing")
    with pytest.raises(InputError, match="nothing to run on"):
        guard_bundle_outputs(volume_files(tmp_path), _sr_writer(tmp_path / "out"), tmp_path)


@pytest.mark.parametrize("word, value", [("false", False), ("False", False), ("0", False), ("true", True)])
def test_switches_given_as_words_on_the_bundle_command_line_mean_what_they_say(word, value):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.components import ClinicalConsistencyd, as_flag

    step = ClinicalConsistencyd(gain=word, curve=word)
    assert (step.gain, step.curve) == (value, value)
    with pytest.raises(InputError, match="true or false"):
        as_flag("maybe", "progress")


def test_the_clinical_writer_leaves_no_sequence_of_an_earlier_run(tmp_path):
    import torch
    from monai.data import MetaTensor

    from mtsr_monai.inference.components import CLINICAL_KEY, SaveClinicald

    out = tmp_path / "s1"
    out.mkdir()
    (out / "notes.nii.gz").write_bytes(b"the user's own")

    def write(given: list[str]) -> dict:
        info = {"modalities": ["flair", "t1", "t2"], "given": given}
        image = MetaTensor(torch.zeros(3, 4, 4, 4), meta={CLINICAL_KEY: json.dumps(info)})
        item = {"image": image, "pred": torch.rand(3, 4, 4, 4), "session": "s1"}
        return SaveClinicald(output_dir=str(tmp_path))(item)

    write(["flair", "t1", "t2"])
    d = write(["flair", "t1"])  # the earlier run's T2 goes, the user's file stays
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "flair.nii.gz",
        "notes.nii.gz",
        "t1.nii.gz",
    ]
    assert sorted(d["pred_paths"]) == ["flair", "t1"]


@pytest.mark.parametrize("bundle", ["mtsr_sr", "clinical_sr"])
def test_bundle_configs_refuse_weights_that_differ_from_their_sha256(tmp_path, bundle):
    import shutil

    from mtsr_monai.errors import InputError, root_cause
    from mtsr_monai.inference.bundle import bundle_parser

    copy = tmp_path / bundle
    shutil.copytree(REPO / "bundles" / bundle / "configs", copy / "configs")
    shutil.copy(REPO / "bundles" / bundle / "large_files.yml", copy)
    (copy / "models").mkdir()
    (copy / "models" / "model.pt").write_bytes(b"not the shipped weights")
    with pytest.raises(RuntimeError) as info:  # MONAI's parser wraps the cause
        bundle_parser(copy).get_parsed_content("checkpoint")
    cause = root_cause(info.value)
    assert isinstance(cause, InputError) and "sha256" in str(cause)


def test_masks_and_labels_beside_the_scans_are_not_bundle_inputs(tmp_path):
    from mtsr_monai.inference.bundle import volume_files

    for name in ("a_t1.nii.gz", "a_brain_mask.nii.gz", "a_seg.nii.gz", "b.nrrd"):
        (tmp_path / name).write_bytes(b"")
    with pytest.warns(UserWarning, match="named as a mask or label"):
        files = volume_files(tmp_path)
    assert [Path(f).name for f in files] == ["a_t1.nii.gz", "b.nrrd"]


@pytest.mark.parametrize(
    "signal_name, code, last_line",
    [
        ("SIGINT", 130, "mtsr bundle run: interrupted (Ctrl-C)"),
        ("SIGTERM", 143, "mtsr bundle run: stopped (exit code 143)"),
    ],
)
def test_an_interrupted_bundle_inference_ends_without_traceback_or_outputs(
    tmp_path, signal_name, code, last_line
):
    import signal

    scans = tmp_path / "in"
    scans.mkdir()
    _scan(scans / "a.nii.gz", (96, 96, 24), (1.0, 1.0, 1.0), 300, 200)  # tens of seconds of SR
    configs = REPO / "bundles/mtsr_sr/configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file",
           str(configs / "inference.yaml"), "--bundle_root", str(REPO / "bundles/mtsr_sr"),
           "--dataset_dir", str(scans), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    # pytest-xdist workers ignore SIGINT, and a child would inherit that: restore the default
    reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, preexec_fn=reset
    )
    seen = []
    for line in proc.stdout:  # ignite's first line of the evaluator's run: the weights are loaded
        seen.append(line)
        if "SupervisedEvaluator - INFO - Engine run" in line:
            proc.send_signal(getattr(signal, signal_name))
            break
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == code, rest[-2000:]
    assert "Traceback" not in rest and rest.rstrip().endswith(last_line)
    assert not (tmp_path / "out").exists()  # the empty output folder it made is removed


def test_mt_bundle_inference_names_missing_weights_and_how_to_train_them(tmp_path):
    (tmp_path / "scans").mkdir()
    _scan(tmp_path / "scans" / "scan_t1.nii.gz", (24, 24, 8), (1.0, 1.0, 1.0), 300.0, 500.0)
    done = _bundle_inference(
        "mtsr_mt",
        *("--dataset_dir", str(tmp_path / "scans"), "--output_dir", str(tmp_path / "out")),
        *("--source", "pd", "--target", "flair"),
        code=2,
    )
    assert "pd_to_flair.pt: no such weights file (train one with" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_input_is_refused_before_the_inputs_listed_before_it_are_run(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import file_list, guard_bundle_outputs

    scan = _scan(tmp_path / "a.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)
    datalist = [{"image": f} for f in file_list([str(scan), str(tmp_path / "nope.nii.gz")])]
    with pytest.raises(InputError, match="no such file"):
        guard_bundle_outputs(datalist, _sr_writer(tmp_path / "out"))
    (tmp_path / "notes.txt").write_text("not a scan")  # an existing file of no volume name is read too
    with pytest.raises(InputError, match="notes.txt"):
        items = [{"image": str(scan)}, {"image": str(tmp_path / "notes.txt")}]
        guard_bundle_outputs(items, _sr_writer(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_one_input_file_given_alone_is_a_list_of_one_and_other_values_are_refused():
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.bundle import file_list

    assert file_list("a.nii.gz") == ["a.nii.gz"]  # not ['a', '.', 'n', ...]
    with pytest.raises(InputError, match="must be a list of paths"):
        file_list({"image": "a.nii.gz"})


@pytest.mark.parametrize("bundle", ["mtsr_sr", "mtsr_mt", "clinical_sr"])
@pytest.mark.parametrize("word, precision", [("false", "fp32"), ("true", "auto")])
def test_amp_given_as_a_word_on_the_command_line_sets_the_training_precision(bundle, word, precision):
    from mtsr_monai.inference.bundle import bundle_parser

    parser = bundle_parser(REPO / "bundles" / bundle, config="configs/train.yaml")
    parser["amp"] = word  # what `--amp false` gives: a string, which `if @amp` took for true
    assert parser.get_parsed_content("precision") == precision


def test_an_evaluation_refuses_an_output_dir_it_cannot_write_before_its_work():
    from mtsr_monai.errors import InputError
    from mtsr_monai.io.outputs import check_output_folder

    with pytest.raises(InputError, match="is an existing file"):
        check_output_folder(__file__)
    for bundle in ("mtsr_sr", "mtsr_mt", "clinical_sr"):
        run = (REPO / "bundles" / bundle / "configs" / "evaluate.yaml").read_text().split("\nrun:\n", 1)[1]
        assert run.lstrip().startswith("- $mtsr_monai.io.outputs.check_output_folder(@output_dir)"), bundle


@pytest.mark.slow
def test_sr_weights_of_another_network_are_refused_in_one_line(tmp_path):
    scans = tmp_path / "in"
    scans.mkdir()
    _scan(scans / "lr.nii.gz", (8, 8, 3), (1.0, 1.0, 3.0), 300, 200)
    wrong = str(REPO / "bundles" / "mtsr_mt" / "models" / "model.pt")
    args = ["--dataset_dir", str(scans), "--output_dir", str(tmp_path / "out"), "--checkpoint", wrong]
    done = _bundle_inference("mtsr_sr", *args, code=2)
    assert "weights do not fit the bundle's network" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_sr_bundle_inference_reads_its_weights_once(tmp_path, monkeypatch):
    import torch

    from mtsr_monai.inference.bundle import bundle_parser

    (tmp_path / "in").mkdir()
    _scan(tmp_path / "in" / "lr.nii.gz", (12, 12, 3), (1.0, 1.0, 3.0), 300, 200)
    reads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(str(f)) or load(f, *a, **k))
    overrides = {"dataset_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "out"), "device": "cpu"}
    bundle_parser("mtsr_sr", overrides).get_parsed_content("inference")
    assert (tmp_path / "out" / "lr_sr.nii.gz").is_file()
    assert [Path(f).name for f in reads] == ["model.pt"]


@pytest.mark.parametrize("value", ["2.5", "0", "-1"])
def test_an_sr_bundle_window_size_the_command_would_refuse_is_refused_before_any_work(tmp_path, value):
    (tmp_path / "in").mkdir()
    _scan(tmp_path / "in" / "lr.nii.gz", (12, 12, 3), (1.0, 1.0, 3.0), 300, 200)
    args = ("--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"), "--roi_size", value)
    done = _bundle_inference("mtsr_sr", *args, code=2)
    assert done.stderr.strip().splitlines()[-1].startswith("mtsr bundle run: error: roi_size must be")
    assert not (tmp_path / "out").exists()
