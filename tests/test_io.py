import gzip
import subprocess
import sys
import warnings

import numpy as np
import pytest

from mtsr_monai.errors import InputError
from mtsr_monai.io import (
    atomic_output,
    check_same_grid,
    fine_input_warning,
    image_header,
    load_volume,
    save_volume,
)
from tests.conftest import write_nifti


def test_roundtrip_keeps_affine_and_values(tmp_path, phantom):
    affine = np.array([[0, -0.9, 0, -10], [1.1, 0, 0, 20], [0, 0, 3, 5], [0, 0, 0, 1]], float)
    src = write_nifti(tmp_path / "in.nii.gz", phantom, affine)
    vol = load_volume(src)
    out = save_volume(vol, tmp_path / "out.nii.gz")
    back = load_volume(out)
    np.testing.assert_allclose(np.asarray(back.affine), affine, atol=1e-5)
    np.testing.assert_allclose(back.numpy(), phantom, atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_roundtrip_keeps_an_affine_whose_axes_are_all_permuted(tmp_path, phantom, suffix):
    # LIA-like: array axis 0 runs along world y, axis 1 along z, axis 2 along x (FreeSurfer, sagittal scans)
    affine = np.array([[0, 0, -1.0, 90], [1.2, 0, 0, -100], [0, 0.9, 0, -80], [0, 0, 0, 1]])
    out = save_volume(phantom, tmp_path / f"out{suffix}", affine)
    back = load_volume(out)
    np.testing.assert_allclose(np.asarray(back.affine), affine, atol=1e-5)
    np.testing.assert_allclose(back.numpy(), phantom, atol=1e-6)


def test_mask_saved_as_uint8(tmp_path, phantom):
    import nibabel as nib

    out = save_volume(
        (phantom > 0.5).astype(np.uint8), tmp_path / "m.nii.gz", affine=np.eye(4), dtype=np.uint8
    )
    assert nib.load(str(out)).get_data_dtype() == np.uint8


@pytest.mark.parametrize("dtype", [np.int8, np.int64])
def test_itk_files_of_any_integer_type_are_read(tmp_path, phantom, dtype):
    import SimpleITK as sitk

    labels = (phantom * 4).astype(dtype)  # int64 is what numpy-based tools write label maps in
    sitk.WriteImage(sitk.GetImageFromArray(labels.transpose(2, 1, 0)), str(tmp_path / "labels.nrrd"))
    np.testing.assert_array_equal(load_volume(tmp_path / "labels.nrrd").numpy(), labels.astype(np.float32))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize(
    "array", [np.eye(6)[..., None].repeat(3, 2) > 0, np.linspace(0, 1, 108).reshape(6, 6, 3)]
)
def test_bool_and_float16_arrays_are_written_in_their_own_type_or_a_wider_one(tmp_path, array, suffix):
    array = array.astype(np.float16) if array.dtype.kind == "f" else array
    out = save_volume(array, tmp_path / f"out{suffix}", np.eye(4), dtype=None)
    np.testing.assert_array_equal(load_volume(out).numpy(), array.astype(np.float32))


def test_itk_header_gives_the_affine_that_loading_gives(tmp_path, phantom):
    affine = np.array([[0, 0, -1.0, 90], [1.2, 0, 0, -100], [0, 0.9, 0, -80], [0, 0, 0, 1]])
    out = save_volume(phantom, tmp_path / "t1.mha", affine)
    np.testing.assert_allclose(image_header(out)[1], np.asarray(load_volume(out).affine), atol=1e-9)


def test_a_truncated_nrrd_is_refused_in_one_line_without_the_readers_source_paths(tmp_path, phantom):
    whole = save_volume(phantom, tmp_path / "whole.nrrd", np.eye(4)).read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(whole[:200])
    with pytest.raises(InputError, match="unreadable or truncated") as info:
        load_volume(tmp_path / "cut.nrrd")
    assert "\n" not in str(info.value) and ".cxx" not in str(info.value)


def test_single_volume_4d_is_squeezed(tmp_path, phantom):
    assert load_volume(write_nifti(tmp_path / "v.nii.gz", phantom[..., None])).shape == phantom.shape


@pytest.mark.parametrize(
    "array, affine, problem",
    [
        (np.zeros((8, 8, 8)) + 3, None, "constant"),
        (np.random.rand(8, 8), None, "3D"),
        (np.random.rand(8, 8, 8, 2), None, "4D"),
        (np.where(np.eye(8)[..., None].repeat(8, 2) > 0, np.nan, 1.0), None, "NaN"),
        (np.random.rand(8, 8, 8), np.diag([100.0, 1, 1, 1]), "voxel size"),
        (np.zeros((32, 0, 8), np.float32), None, "no voxels"),
    ],
)
def test_bad_volumes_are_refused(tmp_path, array, affine, problem):
    path = write_nifti(tmp_path / "bad.nii.gz", array.astype(np.float32), affine)
    with pytest.raises(InputError, match=problem) as info:
        load_volume(path)
    assert "bad.nii.gz" in str(info.value)


def test_truncated_file_is_refused(tmp_path, phantom):
    path = write_nifti(tmp_path / "full.nii.gz", phantom)
    raw = gzip.decompress(path.read_bytes())
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match="unreadable or truncated"):
        load_volume(cut)


@pytest.mark.parametrize("name, reason", [("junk.nii.gz", "not a gzip file"), ("junk.nii", "file type")])
def test_bytes_that_are_not_nifti_are_refused_in_nibabels_words(tmp_path, name, reason):
    path = tmp_path / name
    path.write_bytes(b"hello")
    with pytest.raises(InputError, match="unreadable or truncated") as info:
        load_volume(path)
    assert reason in str(info.value) and "reader" not in str(info.value)


def test_an_input_already_finer_than_2_mm_in_plane_is_warned_about(tmp_path):
    volume = np.ones((8, 10, 4), np.float32)
    fine = write_nifti(tmp_path / "fine.nii.gz", volume, np.diag([0.8, 0.8, 3.0, 1.0]))
    message = fine_input_warning(fine, "axial", 4)
    assert "0.80 x 0.80 mm" in message and "0.20 x 0.20 mm" in message and "32 x 40 x 4 voxels" in message
    coarse = write_nifti(tmp_path / "coarse.nii.gz", volume, np.diag([4.0, 4.0, 1.0, 1.0]))
    assert fine_input_warning(coarse, "axial", 4) is None
    # the plane comes from the affine: sagittal slices of that coarse file are 4 x 1 mm, not fine
    assert fine_input_warning(coarse, "sagittal", 4) is None


def test_different_grids_are_refused():
    with pytest.raises(InputError, match="not on the grid"):
        check_same_grid([(4, 4, 4), (4, 4, 5)], [np.eye(4), np.eye(4)], ["t1.nii.gz", "t2.nii.gz"])
    with pytest.raises(InputError, match="affines differ"):
        check_same_grid([(4, 4, 4), (4, 4, 4)], [np.eye(4), np.diag([2, 1, 1, 1])], ["t1", "t2"])
    shifted = np.eye(4)
    shifted[:3, 3] = [0.0, 10.0, 0.0]  # same shape and voxel size, 10 mm apart
    with pytest.raises(InputError, match="affines differ"):
        check_same_grid([(4, 4, 4), (4, 4, 4)], [np.eye(4), shifted], ["t1", "mask"])
    with pytest.raises(InputError, match="affines differ; resample the prediction"):
        check_same_grid([(4,) * 3] * 2, [np.eye(4), 2 * np.eye(4)], "ab", hint="resample the prediction")


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_cli_help_and_version_answer():
    for flag in ("--help", "--version"):
        done = subprocess.run([sys.executable, "-m", "mtsr_monai", flag], capture_output=True, text=True)
        assert done.returncode == 0 and "mtsr" in done.stdout


def test_cli_unknown_argument_exits_2():
    done = subprocess.run(
        [sys.executable, "-m", "mtsr_monai", "--no-such-flag"], capture_output=True, text=True
    )
    assert done.returncode == 2


def test_atomic_output_gets_umask_permissions(tmp_path):
    import os

    target = tmp_path / "out.json"
    with atomic_output(target) as tmp:
        tmp.write_text("{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def _header_variant(path, phantom, unit="mm", codes=(1, 1), qform_shift=0.0):
    import nibabel as nib

    affine = np.diag([1.0, 1.0, 3.0, 1.0]) * (1000.0 if unit == "micron" else 1.0)
    affine[3, 3], affine[:3, 3] = 1.0, affine[:3, :3] @ [-16.0, -16.0, -8.0]
    image = nib.Nifti1Image(phantom * 100, affine)
    image.set_sform(affine, code=codes[0])
    qform = affine.copy()
    qform[0, 3] += qform_shift
    image.set_qform(qform, code=codes[1])
    image.header.set_xyzt_units(unit)
    nib.save(image, str(path))
    return path


def test_a_header_in_microns_is_read_in_mm_and_super_resolved_with_mm_units(tmp_path, phantom):
    import nibabel as nib

    from mtsr_monai.inference.super_resolve import super_resolve_file

    mm = load_volume(_header_variant(tmp_path / "mm.nii.gz", phantom))
    microns = load_volume(_header_variant(tmp_path / "um.nii.gz", phantom, unit="micron"))
    np.testing.assert_allclose(np.asarray(microns.affine), np.asarray(mm.affine))
    out = tmp_path / "sr.nii.gz"
    super_resolve_file(str(tmp_path / "um.nii.gz"), str(out), method="bicubic", progress=False)
    written = nib.load(str(out))
    assert written.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(written.header.get_zooms(), [0.25, 0.25, 3.0])


def test_headers_that_readers_place_differently_are_warned_about(tmp_path, phantom):
    import nibabel as nib

    with pytest.warns(UserWarning, match="no spatial codes"):
        load_volume(_header_variant(tmp_path / "none.nii.gz", phantom, codes=(0, 0)))
    with pytest.warns(UserWarning, match="qform and sform place the image 12.0 mm apart"):
        load_volume(_header_variant(tmp_path / "apart.nii.gz", phantom, qform_shift=12.0))
    flipped = _header_variant(tmp_path / "flipped.nii.gz", phantom)  # qform mirrored left-right: same centre
    image = nib.load(str(flipped))
    mirror = image.affine @ np.array([[-1.0, 0, 0, 31], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    image.set_qform(mirror, code=1)
    nib.save(image, str(flipped))
    with pytest.warns(UserWarning, match="qform and sform place the image 31.0 mm apart"):
        load_volume(flipped)


@pytest.mark.parametrize("codes, kept", [((4, 1), 4), ((5, 0), 5), ((0, 2), 2), ((1, 1), 1), ((0, 0), 1)])
def test_outputs_stay_in_the_nifti_space_of_their_input(tmp_path, phantom, codes, kept):
    import warnings

    import nibabel as nib

    from mtsr_monai.cli import main
    from mtsr_monai.inference.super_resolve import super_resolve_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-codes warning
        src = _header_variant(tmp_path / "in.nii.gz", phantom, codes=codes)
        super_resolve_file(str(src), str(tmp_path / "fast.nii.gz"), method="bicubic", progress=False)
        super_resolve_file(str(src), str(tmp_path / "bundle.nii.gz"), method="bicubic", bundle="mtsr_sr")
        assert main(["degrade", "-i", str(src), "-o", str(tmp_path / "lr.nii.gz"), "--mode", "kspace"]) == 0
        identity = ["translate", "-i", str(src), "--source", "t1", "--target", "flair", "--mask", "none"]
        assert main([*identity, "--method", "identity", "-o", str(tmp_path / "id")]) == 0
    for name in ("fast", "bundle", "lr", "id/mean"):
        header = nib.load(str(tmp_path / f"{name}.nii.gz")).header
        assert (int(header["sform_code"]), int(header["qform_code"])) == (kept, kept), name


def test_a_result_with_nan_is_refused_and_not_written(tmp_path):
    array = np.ones((4, 4, 4), np.float32)
    array[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="1 NaN or infinite voxels"):
        save_volume(array, tmp_path / "out.nii.gz", np.eye(4))
    assert list(tmp_path.iterdir()) == []


def test_a_file_set_replaces_what_mtsr_wrote_never_a_file_the_user_put_or_changed(tmp_path):
    from mtsr_monai.io.atomic import atomic_file_set, record_written

    (tmp_path / "brain_mask.nii.gz").write_bytes(b"kept by an earlier run")
    record_written(tmp_path, ["brain_mask.nii.gz"])
    with atomic_file_set(tmp_path) as staging:
        for name in ("sample_0.nii.gz", "sample_1.nii.gz"):
            (staging / name).write_bytes(b"a sample")
    (tmp_path / "sample_1.nii.gz").write_bytes(b"the user's own, put over it since")
    (tmp_path / "sample_9.nii.gz").write_bytes(b"the user's own")
    with atomic_file_set(tmp_path, stale=["sample_*.nii.gz", "brain_mask.nii.gz"]) as staging:
        (staging / "mean.nii.gz").write_bytes(b"a mean")
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert left == ["mean.nii.gz", "sample_1.nii.gz", "sample_9.nii.gz"]


def test_a_folder_written_before_the_record_is_replaced_by_the_callers_own_account(tmp_path):
    from mtsr_monai.io.atomic import atomic_file_set

    for name in ("sample_0.nii.gz", "sample_1.nii.gz", "sample_scan.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    with atomic_file_set(
        tmp_path, ["sample_*.nii.gz"], earlier=["sample_0.nii.gz", "sample_1.nii.gz"]
    ) as staging:
        (staging / "sample_0.nii.gz").write_bytes(b"new")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "sample_0.nii.gz",
        "sample_scan.nii.gz",
    ]


def test_a_signal_while_a_file_set_moves_in_arrives_after_the_whole_set(tmp_path, monkeypatch):
    import os
    import signal

    from mtsr_monai.io import atomic_file_set

    class Stopped(Exception):
        pass

    def stop(signum, frame):
        raise Stopped

    real_replace, calls = os.replace, []

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # between the first rename and the others

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped):
            with atomic_file_set(tmp_path / "out") as staging:
                for name in ("a.txt", "b.txt", "c.txt"):
                    (staging / name).write_text(name)
                monkeypatch.setattr(os, "replace", replace_then_signal)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "a.txt", "b.txt", "c.txt",
    ]  # fmt: skip


@pytest.mark.parametrize("qform_code", [1, 0])
def test_a_valid_sform_is_the_affine_even_where_pixdim_and_the_qform_disagree(tmp_path, qform_code):
    import nibabel as nib

    from mtsr_monai.io import load_volume

    sform = np.array([[2.0, 0, 0, -48], [0, 2.0, 0, -40], [0, 0, 5.0, -30], [0, 0, 0, 1]])
    header = nib.Nifti1Header()
    header.set_data_shape((8, 8, 4))
    header.set_data_dtype(np.float32)
    header.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=qform_code)  # pixdim 1 mm: not the sform's sizes
    header.set_sform(sform, code=4)  # e.g. an MNI-space scan
    path = tmp_path / "sform.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 4), np.float32), None, header), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qform and sform apart: warned about, the sform used
        assert np.allclose(np.asarray(load_volume(path).affine), sform)


def test_a_sheared_affine_is_warned_about_and_written_with_the_sform_alone(tmp_path):
    import nibabel as nib

    from mtsr_monai.io import load_volume, save_volume

    sheared = np.eye(4)
    sheared[0, 1] = 0.3  # the second voxel axis leans towards the first
    source = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32) + 1, sheared)
    source.set_sform(sheared, code=2)
    nib.save(source, tmp_path / "in.nii.gz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = load_volume(tmp_path / "in.nii.gz")
    assert any("sheared (16.70 degrees" in str(w.message) for w in caught)
    save_volume(volume, tmp_path / "out.nii.gz", space=2)
    header = nib.load(tmp_path / "out.nii.gz").header
    assert int(header["qform_code"]) == 0 and int(header["sform_code"]) == 2  # no second, rotated geometry
    np.testing.assert_allclose(header.get_sform(), sheared, atol=1e-6)


def test_an_rgb_nifti_is_refused_as_a_colour_image_not_as_a_truncated_one(tmp_path):
    import nibabel as nib

    from mtsr_monai.io import load_volume

    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    with pytest.raises(InputError, match="got 3 values a voxel"):
        load_volume(tmp_path / "rgb.nii.gz")
