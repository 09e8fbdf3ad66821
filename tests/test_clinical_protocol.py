"""Protocol simulation transforms (training) and the acquisition forward model (data consistency)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtsr_monai.transforms.protocol import (
    ProtocolParams,
    RandChannelDropout,
    RandChannelDropoutd,
    RandSimulateProtocol,
    RandSimulateProtocold,
    SimulateProtocol,
    SimulateProtocold,
    acquire_like,
    interpolation_weights,
    profile_weights,
)


def _stripes(shape=(1, 40, 36, 12), axis=0, period=2.0) -> torch.Tensor:
    """Fine stripes along ``axis`` (a thick slice along it averages them away), on a positive level."""
    idx = np.arange(shape[axis + 1])
    wave = 1.0 + 0.5 * np.sin(2 * np.pi * idx / period + 0.3)
    view = [1] * len(shape)
    view[axis + 1] = -1
    return torch.as_tensor(np.broadcast_to(wave.reshape(view), shape).copy(), dtype=torch.float32)


def test_weights_rows_sum_to_one_and_interpolation_is_exact_on_lines():
    w = profile_weights(np.array([3.0, 8.5]), 12, 1.0, 5.0, "gaussian")
    np.testing.assert_allclose(w.sum(1), 1.0)
    box = profile_weights(np.array([5.0]), 12, 1.0, 3.0, "boxcar")
    assert np.count_nonzero(box) == 3 and box[0, 5] == pytest.approx(1 / 3)
    pos = np.array([0.0, 1.25, 4.5, 9.0])
    np.testing.assert_allclose(interpolation_weights(pos, 10) @ np.arange(10.0), pos)


@pytest.mark.parametrize("profile", ["gaussian", "boxcar"])
def test_protocol_keeps_intensity_and_removes_detail_only_along_its_thick_axis(profile):
    x = _stripes(axis=0, period=1.7)  # incommensurate with the 6 mm slice period (no aliasing)
    params = ProtocolParams(axis=0, thickness=5.0, gap=1.0, profile=profile, inplane=1.0)
    lr = SimulateProtocol(params)(x)
    assert lr.shape == x.shape
    inner = lr[:, 8:-8]
    assert float(inner.mean()) == pytest.approx(float(x[:, 8:-8].mean()), rel=0.02)  # no intensity drift
    assert float(inner.std()) < 0.2 * float(x.std())  # the 2 mm stripes are gone
    along_y = SimulateProtocol(ProtocolParams(axis=1, thickness=5.0))(x)  # thick axis across the stripes
    torch.testing.assert_close(along_y, x, atol=1e-4, rtol=1e-4)


def test_inplane_spacing_blurs_when_coarser_and_keeps_a_constant():
    x = _stripes(axis=1, period=2.5)
    coarse = SimulateProtocol(ProtocolParams(axis=0, thickness=3.0, inplane=1.2, phase=0.3))(x)
    fine = SimulateProtocol(ProtocolParams(axis=0, thickness=3.0, inplane=0.5, phase=0.3))(x)
    assert float(coarse[:, :, 4:-4].std()) < float(fine[:, :, 4:-4].std()) < float(x.std())
    const = torch.full((2, 20, 20, 8), 0.7)
    out = SimulateProtocol(ProtocolParams(axis=1, thickness=6.5, gap=0.5, inplane=0.8, phase=0.6))(const)
    torch.testing.assert_close(out, const, atol=1e-5, rtol=1e-5)


def test_random_protocols_are_reproducible_in_range_and_prob_skips():
    x = torch.rand(3, 30, 30, 10)
    sim = RandSimulateProtocol(thickness=(3, 7), inplane=(0.5, 1.2), axes=(0, 1), noise=(0.0, 0.01))
    sim.set_random_state(7)
    a = sim(x)
    drawn = list(sim.params)
    sim.set_random_state(7)
    torch.testing.assert_close(sim(x), a)
    assert len({p.axis for p in drawn}) == 1 and drawn[0].axis in (0, 1)  # one session, one slice axis
    for _ in range(30):
        sim(x)
        assert all(3 <= p.thickness <= 7 and 0.5 <= p.inplane <= 1.2 and p.axis != 2 for p in sim.params)
    skip = RandSimulateProtocol(prob=0.0)
    torch.testing.assert_close(skip(x), x)
    assert skip.thick_axis is None


def test_plane_equals_the_slice_of_the_whole_volume():
    x = torch.rand(2, 26, 22, 18)
    params = [
        ProtocolParams(axis=0, thickness=6.0, gap=0.7, inplane=1.1, phase=0.4),
        ProtocolParams(axis=2, thickness=3.5, profile="boxcar", inplane=0.6, phase=0.2),
    ]
    whole = SimulateProtocol(params)(x)
    for axis, index in ((2, 9), (1, 4), (0, 13)):
        part = SimulateProtocol(params, plane=(axis, index))(x)
        torch.testing.assert_close(part, whole.select(axis + 1, index), atol=1e-5, rtol=1e-5)


def test_dictionary_wrappers_write_outputs_and_share_one_draw():
    d = {"hr": torch.rand(2, 24, 24, 8), "other": torch.rand(2, 24, 24, 8)}
    out = RandSimulateProtocold(keys=["hr", "other"], output_keys=["lr", "lr2"]).set_random_state(3)(d)
    assert set(out) == {"hr", "other", "lr", "lr2"} and out["lr"].shape == d["hr"].shape
    skipped = RandSimulateProtocold(keys="hr", output_keys="lr", prob=0.0)(d)
    torch.testing.assert_close(skipped["lr"], d["hr"])
    fixed = SimulateProtocold(keys="hr", params=ProtocolParams(axis=0, thickness=4.0))(d)
    assert "hr_lr" in fixed
    drop = RandChannelDropoutd(keys=["a", "b"], probs=[0.0, 1.0]).set_random_state(0)
    res = drop({"a": torch.ones(2, 4, 4), "b": torch.ones(2, 4, 4)})
    assert float(res["a"][1].abs().sum()) == 0 and float(res["b"][1].abs().sum()) == 0
    assert float(res["a"][0].min()) == 1.0


def test_random_wrappers_draw_apply_then_delegate_on_one_stream():
    """MONAI's convention: the wrapper draws apply-or-skip, then its array transform (prob 1) draws the rest
    from the same stream; no state of the array transform is touched."""
    d = {"hr": torch.rand(2, 20, 20, 8)}
    wrapper = RandSimulateProtocold(keys="hr", output_keys="lr").set_random_state(4)
    assert wrapper.R is wrapper.simulate.R
    stream = np.random.RandomState(4)
    stream.rand()  # the wrapper's apply-or-skip draw
    torch.testing.assert_close(
        wrapper(d)["lr"], RandSimulateProtocol().set_random_state(state=stream)(d["hr"])
    )
    skipped = RandSimulateProtocold(keys="hr", output_keys="lr", prob=0.0)(d)
    assert torch.equal(skipped["lr"], d["hr"]) and skipped["lr"].data_ptr() != d["hr"].data_ptr()
    drop = RandChannelDropoutd(keys="a", probs=[0.0, 1.0], prob=0.5).set_random_state(0)
    assert drop.R is drop.dropout.R
    applied = [float(drop({"a": torch.ones(2, 3, 3)})["a"][1].sum()) == 0 for _ in range(400)]
    assert abs(np.mean(applied) - 0.5) < 0.08  # the wrapper's prob alone decides
    kept = RandChannelDropoutd(keys="a", probs=1.0, prob=0.0)({"a": np.ones((2, 3, 3), np.float32)})
    assert isinstance(kept["a"], torch.Tensor) and float(kept["a"].min()) == 1.0


def test_channel_dropout_rates_follow_probs_and_never_drop_all():
    t = RandChannelDropout(probs=[0.1, 0.2, 0.6]).set_random_state(0)
    counts = np.zeros(3)
    for _ in range(2000):
        y = t(torch.ones(3, 2, 2))
        assert float(y.flatten(1).amax(1).sum()) >= 1
        counts += np.asarray(t.dropped, float)
    np.testing.assert_allclose(counts / 2000, [0.1, 0.2, 0.6], atol=0.04)


def test_acquire_like_reproduces_a_simulated_thick_slice_scan():
    from mtsr_monai.transforms.degradation import degrade_volume_thick_slice
    from mtsr_monai.transforms.sitk_utils import array_to_sitk

    rng = np.random.default_rng(0)
    hr = np.cumsum(rng.standard_normal((36, 30, 24)), axis=0).astype(np.float32)  # detail along x
    hr -= hr.min()
    lr, lr_affine = degrade_volume_thick_slice(hr, np.eye(4), thickness=4.0, axis=0)
    like = array_to_sitk(lr, lr_affine)
    truth = acquire_like(array_to_sitk(hr, np.eye(4)), like, thickness=4.0)
    assert truth.shape == lr.shape
    inner = (slice(1, -1), slice(None), slice(None))
    assert np.abs(truth - lr)[inner].max() < 1e-2 * float(np.abs(lr).max())  # 1 mm fine sampling
    blurred = acquire_like(array_to_sitk(hr * 0.9, np.eye(4)), like, thickness=4.0)  # a drift is seen
    assert float(np.median((blurred - lr)[inner])) < -0.05 * float(np.median(lr))


def _subject(tmp_path, shape=(48, 44, 24)) -> dict:
    from tests.conftest import write_nifti

    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = x**2 + y**2 + z**2 < 0.8
    out = {"subject": "s0"}
    for i, m in enumerate(("flair", "t1", "t2")):
        tex = 0.6 + 0.3 * np.sin(np.arange(shape[0]) * (1.3 + 0.2 * i))[:, None, None]
        vol = np.where(inside, tex * (100 + 50 * i), 0.0).astype(np.float32)
        out[m] = str(write_nifti(tmp_path / f"{m}.nii.gz", vol, np.eye(4)))
    return out


def test_protocol_dataset_samples_share_the_input_scale_and_drop_channels(tmp_path):
    from scipy.ndimage import binary_erosion

    from mtsr_monai.data.clinical import ProtocolSliceDataset, cached_volumes

    vols = cached_volumes([_subject(tmp_path)], tmp_path / "cache", headroom=1.25, progress=False)
    assert float(np.max(vols[0]["hr"])) <= 1.0 / 1.25 + 1e-3 + 0.01  # headroom above the 99.5 % level
    again = cached_volumes([_subject(tmp_path)], tmp_path / "cache", headroom=1.25, progress=False)
    assert isinstance(again[0]["hr"], np.memmap)
    sim = {"thickness": (3, 7), "axes": (0, 1), "inplane": (0.5, 1.2)}
    ds = ProtocolSliceDataset(
        vols, sim, patch_size=16, samples_per_scan=40, channel_dropout=[0.0, 0.0, 0.9], intensity_gain=0.0
    )
    dropped, ratios = 0, []
    for i in range(len(ds)):
        s = ds[i]
        assert s["lr"].shape == s["hr"].shape == (3, 16, 16) and s["mask"].shape == (1, 16, 16)
        assert 0 <= float(s["lr"].min()) and float(s["lr"].max()) <= 1
        dropped += int(float(s["lr"][2].abs().sum()) == 0 and float(s["hr"][2].abs().sum()) > 0)
        m = binary_erosion(s["mask"][0].numpy() > 0, iterations=4)  # away from the blurred brain edge
        if m.sum() > 10:
            ratios.append(float(s["lr"][0].numpy()[m].mean() / s["hr"][0].numpy()[m].mean()))
    assert dropped >= 25  # T2 zeroed in most samples, its target kept
    assert abs(float(np.median(ratios)) - 1.0) < 0.05  # one scale: no darkening to learn
    full = ProtocolSliceDataset(vols, sim, mode="slice", samples_per_scan=3)
    assert full[0]["lr"].ndim == 3
    first, again = ds.set_random_state(7)[0], ds.set_random_state(7)[0]
    assert all(torch.equal(first[k], again[k]) for k in first)  # one seed reseeds protocol and transforms too


def test_a_cache_entry_cut_while_its_record_is_written_is_made_again(tmp_path, monkeypatch):
    from pathlib import Path

    from mtsr_monai.data.clinical import cached_volumes

    real_write = Path.write_text

    def cut(path, text, *args, **kwargs):  # the record's bytes half written when the interruption lands
        real_write(path, text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", cut)
    with pytest.raises(KeyboardInterrupt):
        cached_volumes([_subject(tmp_path)], tmp_path / "cache", progress=False)
    monkeypatch.setattr(Path, "write_text", real_write)
    again = cached_volumes([_subject(tmp_path)], tmp_path / "cache", progress=False)
    assert again[0]["subject"] == "s0" and again[0]["hr"].shape[0] == 3


def test_validation_pair_maps_outputs_into_the_reference_scale(tmp_path):
    from mtsr_monai.data.clinical import protocol_pair
    from mtsr_monai.inference.clinical import score_against_pair

    subject = _subject(tmp_path)
    pair = protocol_pair(subject, ("flair", "t1", "t2"), {"axis": 0, "thickness": 5.0}, 1.25, ["t2"])
    assert pair["score_channels"] == [0, 1] and float(np.abs(pair["lr"][2]).max()) == 0
    m = pair["mask"]
    # the interpolated input, mapped by out_scale, has the reference's median (no drift in the pairing)
    for c in (0, 1):
        mapped = pair["lr"][c] * pair["out_scale"][c]
        assert float(np.median(mapped[m]) / np.median(pair["hr"][c][m])) == pytest.approx(1.0, abs=0.05)
    assert float(pair["lr"].max()) <= 1 / 1.25 + 1e-6  # clipped at the level, then / headroom: as inference
    dark = score_against_pair(pair["lr"] * 0.9, pair)["psnr"]
    assert score_against_pair(pair["lr"], pair)["psnr"] > dark  # a drift costs PSNR
    with pytest.raises(ValueError):
        protocol_pair(subject, ("flair",), {"axis": 2, "thickness": 5.0})


class _Dark(torch.nn.Module):
    """A 'model' that returns its input 10 % darker (the shipped weights' failure, exaggerated)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.9 * x


def test_gain_step_restores_the_input_scale_and_writes_consistency_maps(tmp_path):
    import json

    from mtsr_monai.inference.clinical import restore_clinical
    from mtsr_monai.io import load_volume
    from tests.test_clinical import _slabs

    scans = _slabs(tmp_path)
    ckpt = {"network": _Dark(), "critic": None, "modalities": ["flair", "t1", "t2"], "patch_size": None}
    medians, reports = {}, {}
    for gain in (False, True):
        out = tmp_path / f"gain{int(gain)}"
        written = restore_clinical(
            scans, out, spacing=1.0, checkpoint=ckpt, intensity_gain=gain, intensity_curve=False,
            progress=False, patches=False,
        )  # fmt: skip
        reports[gain] = json.loads(written["json"].read_text())["consistency"]
        vol = load_volume(written["flair"]).numpy()
        medians[gain] = float(np.median(vol[vol > 0]))
        cmap = load_volume(written["flair_consistency"], validate=False)
        assert cmap.shape == load_volume(scans["flair"]).shape  # on the input's grid
    trilinear = restore_clinical(scans, tmp_path / "tri", spacing=1.0, method="trilinear", progress=False)
    vol = load_volume(trilinear["flair"]).numpy()
    ref = float(np.median(vol[vol > 0]))
    assert medians[False] / ref == pytest.approx(0.9, abs=0.02)
    assert medians[True] / ref == pytest.approx(1.0, abs=0.02)  # the gain step undoes the drift
    assert reports[True]["flair"]["gain"] == pytest.approx(1 / 0.9, rel=0.03)
    assert reports[True]["flair"]["nrmse"] < reports[False]["flair"]["nrmse"]
    # (this 4-slice phantom is half edge slices, whose re-acquisition is darker: only the change is checked)
    assert abs(reports[True]["flair"]["median_ratio"] - reports[False]["flair"]["median_ratio"] / 0.9) < 0.03
    assert "trilinear" in reports[True]["t2"]  # the interpolation's consistency, for comparison


def test_each_consistency_map_lies_in_the_space_of_its_own_input(tmp_path):
    import nibabel as nib

    from mtsr_monai.inference.clinical import restore_clinical
    from tests.test_clinical import _slabs

    scans = _slabs(tmp_path)
    t2 = nib.load(str(scans["t2"]))
    t2 = nib.Nifti1Image(np.asanyarray(t2.dataobj), t2.affine)
    t2.set_sform(t2.affine, code=4)  # the T2 in MNI space, the FLAIR (the output grid's) another
    t2.set_qform(t2.affine, code=4)
    nib.save(t2, str(scans["t2"]))
    ckpt = {"network": _Dark(), "critic": None, "modalities": ["flair", "t1", "t2"], "patch_size": None}
    written = restore_clinical(scans, tmp_path / "out", spacing=1.0, checkpoint=ckpt, progress=False,
                               patches=False)  # fmt: skip
    code = {k: int(nib.load(str(written[k])).header["sform_code"]) for k in ("t2_consistency", "flair")}
    assert code == {"t2_consistency": 4, "flair": int(nib.load(str(scans["flair"])).header["sform_code"])}


class _DimBright(torch.nn.Module):
    """A 'model' that halves everything above 0.5 of the [0, 1] input (an L1 network's dimmed lesions)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - 0.5 * torch.relu(x - 0.5)


def test_curve_step_restores_dimmed_bright_tissue_consistently_with_the_input(tmp_path):
    import json

    from mtsr_monai.inference.clinical import restore_clinical
    from mtsr_monai.io import load_volume
    from tests.test_clinical import _slabs

    scans = _slabs(tmp_path)
    ckpt = {"network": _DimBright(), "critic": None, "modalities": ["flair", "t1", "t2"], "patch_size": None}
    tri = restore_clinical(scans, tmp_path / "tri", spacing=1.0, method="trilinear", progress=False)
    bright = np.percentile(load_volume(tri["flair"]).numpy(), 99)
    level, report = {}, {}
    for curve in (False, True):
        written = restore_clinical(
            scans, tmp_path / f"curve{int(curve)}", spacing=1.0, checkpoint=ckpt, intensity_curve=curve,
            progress=False, patches=False,
        )  # fmt: skip
        level[curve] = np.percentile(load_volume(written["flair"]).numpy(), 99) / bright
        report[curve] = json.loads(written["json"].read_text())["consistency"]["flair"]
    assert level[False] < 0.9 and level[True] == pytest.approx(1.0, abs=0.05)  # bright tissue back
    # re-acquired, what is written has the input's median and is closer to the input
    assert report[True]["median_ratio"] == pytest.approx(1.0, abs=0.03)
    assert report[True]["nrmse"] < report[False]["nrmse"]
    assert (
        "curve" not in report[False]
        and report[True]["curve"]["input"][-1] > report[True]["curve"]["output"][-1]
    )


class _Haze(torch.nn.Module):
    """A 'model' that returns its input plus a faint haze everywhere (what a network leaves in the air)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1e-3


def test_restored_volume_keeps_the_inputs_empty_background_at_zero(tmp_path):
    from mtsr_monai.inference.clinical import restore_clinical
    from mtsr_monai.io import load_volume
    from tests.test_clinical import _slabs

    scans = _slabs(tmp_path)
    ckpt = {"network": _Haze(), "critic": None, "modalities": ["flair", "t1", "t2"], "patch_size": None}
    tri = restore_clinical(scans, tmp_path / "tri", spacing=1.0, method="trilinear", progress=False)
    out = restore_clinical(
        scans, tmp_path / "model", spacing=1.0, checkpoint=ckpt, progress=False, patches=False
    )
    for m in ("flair", "t2"):
        ref, vol = load_volume(tri[m]).numpy(), load_volume(out[m]).numpy()
        np.testing.assert_array_equal(vol == 0, ref == 0)  # no haze where the input has no signal


def test_interpolation_baseline_keeps_the_brightest_voxels_unclipped(tmp_path):
    from mtsr_monai.inference.clinical import restore_clinical
    from mtsr_monai.io import load_volume
    from tests.test_clinical import _slabs

    scans = _slabs(tmp_path)
    source = load_volume(scans["flair"]).numpy()
    tri = restore_clinical({"flair": scans["flair"]}, tmp_path / "t", like=scans["flair"], method="trilinear")
    out = load_volume(tri["flair"]).numpy()  # on the input's own grid: the interpolation is the identity
    assert out.max() > np.percentile(source[source > 0], 99.5)  # not pinned at the [0, 1] scaling's top
    np.testing.assert_allclose(out, source, rtol=1e-4, atol=1e-3 * source.max())


def test_bundle_restored_channels_keep_a_given_inputs_background_at_zero():
    import json

    from monai.data import MetaTensor

    from mtsr_monai.inference.components import CLINICAL_KEY, RestoreClinicalIntensityd

    image = MetaTensor(torch.tensor([[[[0.0, 0.5]]], [[[0.0, 0.0]]]]))  # flair given, t2 absent (zeros)
    info = {"modalities": ["flair", "t2"], "given": ["flair"], "bounds": {"flair": [0.0, 200.0]}}
    image.meta[CLINICAL_KEY] = json.dumps(info)
    pred = torch.full((2, 1, 1, 2), 0.01)
    item = {"pred": pred, "image": image, "coverage": torch.ones(1, 1, 1, 2)}
    out = RestoreClinicalIntensityd()(item)["pred"]
    assert out[0].flatten().tolist() == pytest.approx([0.0, 2.0])  # background kept, signal scaled
    assert out[1].flatten().tolist() == pytest.approx([0.01, 0.01])  # an absent sequence is not masked


def test_apply_curve_is_continuous_and_keeps_background():
    from mtsr_monai.inference.clinical import apply_curve

    curve = (np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.5, 8.0]))
    v = np.array([0.0, -1.0, 0.5, 1.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(apply_curve(v, curve), [0.0, -1.0, 0.75, 1.5, 5.25, 8.0, 10.0])


def test_real_heldout_outputs_keep_the_reference_intensity_scale(shared_data, tmp_path):
    """Shipped weights on a held-out BraTS subject (24 axial slices of it, cropped in-plane to the head's
    160 x 192 box for speed; 5 mm sagittal slabs of FLAIR and T1): the median brain intensity of each restored
    volume is within 2 % of the 1 mm reference's."""
    from mtsr_monai.inference.clinical import default_model_path, restore_clinical
    from mtsr_monai.io import load_volume, save_volume
    from mtsr_monai.transforms.degradation import degrade_volume_thick_slice

    if not default_model_path().exists():
        pytest.skip("shipped clinical weights not present")
    case = shared_data / "brats2018_tcia" / "Brats18_TCIA10_637_1"
    inputs, refs = {}, {}
    for m in ("flair", "t1"):
        vol = load_volume(case / f"Brats18_TCIA10_637_1_{m}.nii.gz")
        affine = np.asarray(vol.affine, np.float64).copy()
        affine[:, 3] = affine @ np.array([40.0, 32.0, 60.0, 1.0])  # the crop keeps its place in space
        crop = vol.numpy()[40:200, 32:224, 60:84]  # the brain spans x 52-184, y 45-214 there
        refs[m] = save_volume(crop, tmp_path / f"ref_{m}.nii.gz", affine=affine)
        lr, lr_affine = degrade_volume_thick_slice(crop, affine, 5.0, axis="sagittal")
        inputs[m] = save_volume(lr, tmp_path / f"lr_{m}.nii.gz", affine=lr_affine)
    written = restore_clinical(inputs, tmp_path / "out", like=refs["flair"], register=False, progress=False)
    for m in ("flair", "t1"):
        ref = load_volume(refs[m]).numpy()
        out = load_volume(written[m]).numpy()
        brain = ref > 0
        assert float(np.median(out[brain]) / np.median(ref[brain])) == pytest.approx(1.0, abs=0.02), m


def test_two_planes_through_the_thick_axis_average_two_restorations():
    from mtsr_monai.inference.clinical import restore_planes, restore_volume, slice_axes_for

    assert [slice_axes_for(t) for t in (0, 1, 2)] == [(2, 1), (2, 0), (1, 0)]
    assert slice_axes_for(0, planes=1) == (2,)
    net = torch.nn.Conv2d(2, 2, 3, padding=1)  # direction-dependent, so the two planes differ
    x = np.random.default_rng(0).random((2, 10, 12, 8)).astype(np.float32)
    with torch.no_grad():
        two = restore_planes(net, x, (2, 1))
        np.testing.assert_allclose(
            two, (restore_volume(net, x, 2) + restore_volume(net, x, 1)) / 2, atol=1e-6
        )
        assert not np.allclose(two, restore_volume(net, x, 2), atol=1e-3)


def test_a_metatensor_keeps_its_affine_and_meta_through_a_protocol():
    from monai.data import MetaTensor

    from mtsr_monai.transforms.protocol import RandSimulateProtocol

    image = MetaTensor(torch.rand(1, 24, 24, 12), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    image.meta["filename_or_obj"] = "t1.nii.gz"
    protocol = RandSimulateProtocol()
    protocol.set_random_state(0)
    out = protocol(image)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, image.affine)
    assert out.meta["filename_or_obj"] == "t1.nii.gz"


def test_protocol_patches_without_a_margin_keep_their_size(tmp_path):
    from mtsr_monai.data.clinical import ProtocolSliceDataset, cached_volumes

    vols = cached_volumes([_subject(tmp_path)], tmp_path / "cache", progress=False)
    sim = {"thickness": (3, 5), "axes": (0, 1), "inplane": (1.0, 1.0)}
    sample = ProtocolSliceDataset(vols, sim, patch_size=16, samples_per_scan=2, margin=0)[0]
    assert sample["lr"].shape == sample["hr"].shape == (3, 16, 16) and sample["mask"].shape == (1, 16, 16)


def test_the_planes_through_a_thick_axis_are_anatomical_whatever_the_storage_order():
    from mtsr_monai.inference.clinical import slice_axes_for

    lps = np.diag([-1.0, -1.0, 3.0, 1.0])  # a sagittal slab: x thick, stored L, P, S
    sar = np.array([[0, 0, 3.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])  # the same, stored S, A, R
    assert slice_axes_for(0, 2, lps) == (2, 1)  # axial first, then coronal
    assert slice_axes_for(2, 2, sar) == (0, 1)  # axial (stored axis 0, S) first, then coronal
    assert slice_axes_for(2, 1, sar) == (0,)
