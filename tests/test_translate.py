"""Volume translation (mtsr translate) and the LPIPS / diversity measures."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from mtsr_monai.inference.translate import (
    export_generator,
    load_translator,
    restore_target_scaling,
    translate_volume,
)
from mtsr_monai.metrics.perceptual import consecutive_pairs, load_lpips, sample_measures
from mtsr_monai.networks.bicyclegan import LatentUNetGenerator
from tests.conftest import write_nifti


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    g = LatentUNetGenerator(nz=4, ngf=4, image_size=32)
    return export_generator(
        g,
        tmp_path / "t1_to_flair.pt",
        {"source": "t1", "target": "flair", "nz": 4, "ngf": 4, "image_size": 32},
    )


def _cli(*args: str) -> int:
    from mtsr_monai.cli import main

    return main(list(args))


def _translate(image, weights, out, *extra: str) -> int:
    """``mtsr translate`` of ``image`` (t1 -> flair) with ``weights`` into ``out``."""
    args = ["-i", str(image), "--source", "t1", "--target", "flair", "-o", str(out)]
    return _cli("translate", *args, "--weights", str(weights), *extra)


def test_weights_round_trip_in_half_precision(tiny_weights):
    state = torch.load(tiny_weights, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state["generator"].values() if v.is_floating_point())
    g, meta = load_translator(tiny_weights)
    assert meta["nz"] == 4 and next(g.parameters()).dtype == torch.float32


@pytest.mark.parametrize("arch", [{}, {"max_mult": 2, "upsample": "bilinear"}])
def test_the_bundles_network_is_the_generator_load_translator_gives(tmp_path, arch):
    """inference.yaml's network_def is the generator its weights' meta describes (generator_from_meta) and
    its network gets those weights through the config's CheckpointLoader: the network the zoo's tools check
    is the one inference runs, equal to what mtsr translate loads."""
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader

    from mtsr_monai.inference.bundle import bundle_parser
    from mtsr_monai.inference.translate import generator_from_meta

    torch.manual_seed(0)
    meta = {"source": "t1", "target": "flair", "nz": 4, "ngf": 4, "image_size": 32, **arch}
    weights = export_generator(generator_from_meta(meta), tmp_path / "t1_to_flair.pt", meta)
    parser = bundle_parser("mtsr_mt", {"checkpoint": str(weights), "device": "cpu"})
    network = parser.get_parsed_content("network")
    (loader,) = [h for h in parser.get_parsed_content("handlers") if isinstance(h, CheckpointLoader)]
    loader(Engine(lambda engine, batch: None))  # as the evaluator does when it starts
    expected, _ = load_translator(weights)
    x, z = torch.rand(2, 1, 32, 32) * 2 - 1, torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(network.eval()(x, z), expected(x, z))


def test_translation_keeps_grid_background_and_range(tiny_weights, phantom):
    g, _ = load_translator(tiny_weights)
    vol = np.where(phantom > 0.3, phantom, 0).astype(np.float32)[:, :24]  # non-square slices
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    codes = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    out = translate_volume(vol, affine, g, 32, codes, progress=False)
    assert out.shape == (3, *vol.shape)
    assert out.min() >= 0 and out.max() <= 1
    assert np.all(out[:, vol == 0] == 0)
    assert not np.allclose(out[0], out[1])  # different codes, different samples
    np.testing.assert_array_equal(out[2], translate_volume(vol, affine, g, 32, codes[2:], progress=False)[0])


def test_a_z_scored_brain_is_translated_inside_the_brain_only_and_its_dark_tissue_kept(tiny_weights, phantom):
    g, _ = load_translator(tiny_weights)
    brain = phantom > 0.3
    zscored = np.where(brain, (phantom - phantom[brain].mean()) / phantom[brain].std(), 0).astype(np.float32)
    codes = np.zeros((1, 4), np.float32)
    out = translate_volume(zscored, np.eye(4), g, 32, codes, progress=False)[0]
    assert np.all(out[~brain] == 0)  # the background stays 0 (it is not the image's minimum)
    assert np.mean(out[brain & (zscored < 0)] > 0) > 0.9  # tissue below the mean is translated, not cut
    half = np.zeros_like(zscored)
    half[: half.shape[0] // 2] = 1
    masked = translate_volume(zscored, np.eye(4), g, 32, codes, progress=False, mask=half)[0]
    assert np.all(masked[half == 0] == 0)  # nothing outside the given mask


def test_slices_with_pixels_unlike_the_training_slices_are_warned_about(tiny_weights, phantom):
    import warnings

    g, _ = load_translator(tiny_weights)
    vol = np.where(phantom > 0.3, phantom, 0).astype(np.float32)
    codes = np.zeros((1, 4), np.float32)
    with pytest.warns(UserWarning, match="1.00 x 4.00 mm pixels"):
        translate_volume(vol, np.diag([4.0, 1.0, 1.0, 1.0]), g, 32, codes, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        translate_volume(
            vol, np.diag([1.0, 1.0, 4.0, 1.0]), g, 32, codes, progress=False
        )  # thick slices only


@pytest.mark.parametrize("stored_as", [("R", "A", "S"), ("P", "S", "R"), ("S", "L", "A")])
def test_the_same_brain_stored_in_another_voxel_order_gets_the_same_translation(
    tiny_weights, phantom, stored_as
):
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    g, _ = load_translator(tiny_weights)
    vol = np.where(phantom > 0.3, phantom, 0).astype(np.float32)
    vol[4:10, 6:12, 3:6] = 1.0  # an asymmetric lesion, so a flip shows
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    change = ornt_transform(axcodes2ornt(("L", "P", "S")), axcodes2ornt(stored_as))
    other, other_affine = apply_orientation(vol, change), lps @ inv_ornt_aff(change, vol.shape)
    assert nib.aff2axcodes(other_affine) == stored_as
    codes = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    expected = translate_volume(vol, lps, g, 32, codes, progress=False)[0]
    got = translate_volume(other, other_affine, g, 32, codes, progress=False)[0]
    np.testing.assert_allclose(got, apply_orientation(expected, change), atol=1e-6)


def test_translate_volume_refuses_codes_of_another_width_and_a_channel_axis(tiny_weights, phantom):
    from mtsr_monai.errors import InputError

    g, _ = load_translator(tiny_weights)
    codes = np.zeros((1, 4), np.float32)
    with pytest.raises(InputError, match="4-vectors"):
        translate_volume(phantom, np.eye(4), g, 32, np.zeros((1, 8), np.float32), progress=False)
    with pytest.raises(InputError, match="drop the channel axis"):
        translate_volume(phantom[None], np.eye(4), g, 32, codes, progress=False)


def test_median_scaled_samples_return_to_the_robust_convention_each_on_its_own():
    samples = np.zeros((2, 10, 10, 10), np.float32)
    samples[:, 2:8, 2:8, 2:8] = np.linspace(0.1, 0.6, 216).reshape(6, 6, 6)
    samples[1] *= 0.5
    out = restore_target_scaling(samples, "median")
    assert np.all(out[:, samples[0] == 0] == 0)
    for s in out:
        assert np.percentile(s[s > 0], 99.5) == pytest.approx(1.0, abs=1e-3)
    assert restore_target_scaling(samples, "robust") is samples


def test_a_target_level_puts_the_tissue_median_there_and_keeps_samples_relative_brightness():
    samples = np.zeros((2, 10, 10, 10), np.float32)
    samples[:, 2:8, 2:8, 2:8] = np.linspace(0.2, 0.5, 216).reshape(6, 6, 6)  # brain median 0.35
    samples[1] *= 0.8
    out = restore_target_scaling(samples, "median", target_level=0.7)
    assert np.median(out[0][samples[0] > 0]) == pytest.approx(0.7, abs=1e-3)
    np.testing.assert_allclose(out[1], np.clip(out[0] * 0.8, 0, 1), atol=1e-6)  # not each on its own level
    assert np.all(out[:, samples[0] == 0] == 0) and out.max() <= 1.0


def test_translate_cli_reads_the_target_level_from_the_weights(tiny_weights, phantom_file, tmp_path):
    g, meta = load_translator(tiny_weights)
    levelled = export_generator(
        g, tmp_path / "l.pt", {**meta, "target_scaling": "median", "target_level": 0.6}
    )
    assert _translate(phantom_file, tiny_weights, tmp_path / "robust", "-n", "1", "--seed", "0") == 0
    assert _translate(phantom_file, levelled, tmp_path / "levelled", "-n", "1", "--seed", "0") == 0
    robust_out = nib.load(tmp_path / "robust" / "sample_0.nii.gz").get_fdata()
    levelled_out = nib.load(tmp_path / "levelled" / "sample_0.nii.gz").get_fdata()
    np.testing.assert_allclose(levelled_out, np.clip(robust_out * 0.6 / 0.35, 0, 1), atol=1e-5)


def test_translate_cli_reads_the_target_scaling_from_the_weights(tiny_weights, phantom_file, tmp_path):
    g, meta = load_translator(tiny_weights)
    median = export_generator(g, tmp_path / "median.pt", {**meta, "target_scaling": "median"})
    assert _translate(phantom_file, tiny_weights, tmp_path / "robust", "-n", "1", "--seed", "0") == 0
    assert _translate(phantom_file, median, tmp_path / "median", "-n", "1", "--seed", "0") == 0
    robust_out = nib.load(tmp_path / "robust" / "sample_0.nii.gz").get_fdata()
    median_out = nib.load(tmp_path / "median" / "sample_0.nii.gz").get_fdata()
    np.testing.assert_allclose(median_out, restore_target_scaling(robust_out[None], "median")[0], atol=1e-5)


def test_translate_cli_averages_each_sample_with_the_tissue_lookup_the_weights_name(
    tiny_weights, phantom_file, tmp_path
):
    from mtsr_monai.inference.tissue_lookup import tissue_lookup_translate

    g, meta = load_translator(tiny_weights)
    prior = {"weight": 0.5, "source": "t1", "csf": 0.9, "gm": 0.5, "wm": 0.3}
    blended = export_generator(g, tmp_path / "prior.pt", {**meta, "tissue_prior": prior})
    assert _translate(phantom_file, tiny_weights, tmp_path / "plain", "-n", "2", "--seed", "0") == 0
    assert _translate(phantom_file, blended, tmp_path / "prior", "-n", "2", "--seed", "0") == 0
    lookup = tissue_lookup_translate(nib.load(phantom_file).get_fdata().astype(np.float32), "t1", prior)
    for k in (0, 1):
        plain = nib.load(tmp_path / "plain" / f"sample_{k}.nii.gz").get_fdata()
        out = nib.load(tmp_path / "prior" / f"sample_{k}.nii.gz").get_fdata()
        np.testing.assert_allclose(out, 0.5 * plain + 0.5 * lookup, atol=1e-5)


def test_a_tissue_prior_weight_outside_0_1_is_refused():
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.tissue_lookup import blend_with_tissue_lookup

    with pytest.raises(InputError, match="weight"):
        blend_with_tissue_lookup(np.zeros((1, 4, 4, 4)), np.zeros((4, 4, 4)), {"weight": 1.5, "source": "t1"})


def test_translate_cli_draws_codes_from_the_code_prior_the_weights_name(tiny_weights, phantom_file, tmp_path):
    from mtsr_monai.inference.translate import latent_codes

    g, meta = load_translator(tiny_weights)
    prior = {"mean": [0.5, -1.5, 0.0, 2.0], "std": [0.1, 0.2, 1.0, 0.5]}
    shifted = export_generator(g, tmp_path / "prior.pt", {**meta, "code_prior": prior})
    assert _translate(phantom_file, shifted, tmp_path / "out", "-n", "3", "--seed", "4") == 0
    codes = np.array(json.loads((tmp_path / "out" / "codes.json").read_text())["codes"])
    standard = latent_codes(3, 4, seed=4)
    np.testing.assert_allclose(codes, np.array(prior["mean"]) + np.array(prior["std"]) * standard, atol=1e-6)


def test_bundle_inferer_draws_codes_from_the_code_prior():
    from mtsr_monai.inference.components import SliceTranslationInferer
    from mtsr_monai.inference.translate import latent_codes

    prior = {"mean": [1.0, 0.0, -1.0, 0.0], "std": [0.5, 0.5, 2.0, 1.0]}
    inferer = SliceTranslationInferer(image_size=32, nz=4, samples=3, seed=4, code_prior=prior)
    expected = np.array(prior["mean"]) + np.array(prior["std"]) * latent_codes(3, 4, seed=4)
    np.testing.assert_allclose(inferer.latent_codes(), expected, atol=1e-6)


NO_STD, THREE_DIMS, A_ZERO_STD = (
    {"mean": [0.0] * 4},
    {"mean": [0.0] * 3, "std": [1.0] * 3},
    {"mean": [0] * 4, "std": [1, 1, 0, 1]},
)


@pytest.mark.parametrize("prior", [NO_STD, THREE_DIMS, A_ZERO_STD])
def test_a_code_prior_without_nz_means_and_positive_stds_is_refused(prior):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.translate import latent_codes

    with pytest.raises(InputError, match="code_prior"):
        latent_codes(2, 4, seed=0, prior=prior)


def test_aggregate_code_prior_adds_the_spread_of_the_means_to_the_mean_posterior_variance():
    from mtsr_monai.engines.bicyclegan import aggregate_code_prior

    class FixedEncoder(torch.nn.Module):  # mu = the image's mean, logvar = log(0.25), for every dimension
        def forward(self, x):
            mu = x.mean(dim=(1, 2, 3))[:, None].expand(-1, 2)
            return mu, torch.full_like(mu, float(np.log(0.25)))

    batches = [torch.full((2, 1, 4, 4), v) for v in (-1.0, 1.0)]  # means -1, -1, 1, 1: variance 1
    prior = aggregate_code_prior(FixedEncoder(), batches)
    np.testing.assert_allclose(prior["mean"], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(prior["std"], [np.sqrt(1.25)] * 2, atol=1e-6)


def test_translate_cli_writes_samples_mean_std_on_input_grid(tiny_weights, phantom_file, tmp_path):
    out = tmp_path / "out"
    rc = _translate(phantom_file, tiny_weights, out, "-n", "3", "--seed", "7")
    assert rc == 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == [
        "codes.json",
        "mean.nii.gz",
        "sample_0.nii.gz",
        "sample_1.nii.gz",
        "sample_2.nii.gz",
        "std.nii.gz",
    ]
    ref = nib.load(phantom_file)
    samples = np.stack([nib.load(out / f"sample_{i}.nii.gz").get_fdata() for i in range(3)])
    for name in ("sample_0", "mean", "std"):
        img = nib.load(out / f"{name}.nii.gz")
        assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
    np.testing.assert_allclose(nib.load(out / "mean.nii.gz").get_fdata(), samples.mean(0), atol=1e-5)
    np.testing.assert_allclose(nib.load(out / "std.nii.gz").get_fdata(), samples.std(0), atol=1e-5)
    # the recorded codes reproduce sample 1
    codes = json.loads((out / "codes.json").read_text())["codes"]
    (tmp_path / "one.json").write_text(json.dumps([codes[1]]))
    again = tmp_path / "again"
    assert _translate(phantom_file, tiny_weights, again, "--codes", str(tmp_path / "one.json")) == 0
    np.testing.assert_allclose(nib.load(again / "sample_0.nii.gz").get_fdata(), samples[1], atol=1e-6)


def test_a_rerun_with_fewer_samples_leaves_no_sample_of_the_earlier_run(tiny_weights, phantom_file, tmp_path):
    out = tmp_path / "out"
    assert _translate(phantom_file, tiny_weights, out, "-n", "3", "--seed", "1") == 0
    assert _translate(phantom_file, tiny_weights, out, "-n", "1", "--seed", "2") == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "codes.json",
        "mean.nii.gz",
        "sample_0.nii.gz",
        "std.nii.gz",
    ]


@pytest.mark.parametrize("method", ["bicyclegan", "tissue-lookup"])
def test_a_translation_into_an_earlier_runs_folder_leaves_none_of_that_runs_summary_montage_or_sr(
    tiny_weights, phantom_file, tmp_path, method
):
    from mtsr_monai.io import atomic_file_set

    out = tmp_path / "out"
    with atomic_file_set(out) as staging:  # what an earlier `mtsr run` wrote there (and recorded)
        for name in ("sr.nii.gz", "montage.png", "summary.json"):
            (staging / name).write_bytes(b"the run's")
    (out / "notes.json").write_bytes(b"a user's own")
    assert _translate(phantom_file, tiny_weights, out, "--method", method, "-n", "2", "--mask", "none") == 0
    left = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert not left & {"sr.nii.gz", "montage.png", "summary.json"} and "notes.json" in left


@pytest.mark.parametrize("method", ["bicyclegan", "tissue-lookup"])
def test_an_earlier_runs_sr_given_as_the_input_of_a_translation_into_its_folder_is_refused(
    tiny_weights, phantom_file, tmp_path, method
):
    import shutil

    from mtsr_monai.io import atomic_file_set

    out = tmp_path / "out"
    with atomic_file_set(out) as staging:  # recorded as an earlier run's output, which a translation removes
        shutil.copy(phantom_file, staging / "sr.nii.gz")
    before = (out / "sr.nii.gz").read_bytes()
    assert _translate(out / "sr.nii.gz", tiny_weights, out, "--method", method, "--mask", "none") == 2
    assert (out / "sr.nii.gz").read_bytes() == before


@pytest.mark.parametrize("method", ["bicyclegan", "tissue-lookup"])
def test_a_users_own_files_in_the_output_folder_are_never_removed(
    tiny_weights, phantom_file, tmp_path, method
):
    out = tmp_path / "out"
    out.mkdir()
    own = {"brain_mask.nii.gz": b"HD-BET mask", "sample_scan.nii.gz": b"a scan", "codes.json": b"{}"}
    for name, data in own.items():
        (out / name).write_bytes(data)
    extra = ["-n", "2", "--mask", "none"]
    assert _translate(phantom_file, tiny_weights, out, "--method", method, *extra) == 0
    kept = own if method != "bicyclegan" else {k: v for k, v in own.items() if k != "codes.json"}
    assert all((out / name).read_bytes() == data for name, data in kept.items())


@pytest.mark.parametrize("method", ["identity", "tissue-lookup"])
def test_a_baseline_rerun_leaves_no_sample_std_or_codes_of_the_earlier_run_and_keeps_a_users_file(
    tiny_weights, phantom_file, tmp_path, method
):
    out = tmp_path / "out"
    assert _translate(phantom_file, tiny_weights, out, "-n", "3", "--seed", "1") == 0
    (out / "brain_mask.nii.gz").write_bytes((out / "mean.nii.gz").read_bytes())  # a user's own: kept
    assert _translate(phantom_file, tiny_weights, out, "--method", method) == 0  # --weights: ignored
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "brain_mask.nii.gz",
        "mean.nii.gz",
    ]


def test_a_brain_too_small_to_segment_for_the_tissue_lookup_exits_2_and_writes_nothing(
    tiny_weights, phantom, tmp_path, capsys
):
    mask = np.zeros(phantom.shape, np.uint8)
    mask[10:12, 10:12, 2:4] = 1  # 8 voxels
    mask_file = write_nifti(tmp_path / "mask.nii.gz", mask, np.diag([1.0, 1.0, 2.0, 1.0]))
    image = write_nifti(tmp_path / "t1.nii.gz", phantom, np.diag([1.0, 1.0, 2.0, 1.0]))
    out = tmp_path / "out"
    assert _translate(image, tiny_weights, out, "--method", "tissue-lookup", "--mask", str(mask_file)) == 2
    assert "too small to segment" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("method", ["bicyclegan", "identity"])
def test_a_mask_kept_by_an_earlier_run_can_be_given_to_the_next_one(
    tiny_weights, phantom, phantom_file, tmp_path, method
):
    out = tmp_path / "out"
    out.mkdir()
    mask = write_nifti(
        out / "brain_mask.nii.gz", (phantom > 0.3).astype(np.uint8), np.diag([1.0, 1.0, 2.0, 1.0])
    )
    kept = mask.read_bytes()
    assert _translate(phantom_file, tiny_weights, out, "--method", method, "--mask", str(mask)) == 0
    assert mask.read_bytes() == kept and (out / "mean.nii.gz").is_file()


def test_an_interrupted_write_leaves_the_earlier_outputs_whole(
    tiny_weights, phantom_file, tmp_path, monkeypatch
):
    from mtsr_monai.inference import components

    out = tmp_path / "out"
    assert _translate(phantom_file, tiny_weights, out, "-n", "2", "--seed", "1") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_save, saved = components.save_volume, []

    def save_then_interrupt(*args, **kwargs):  # Ctrl-C after the first file of the set is written
        if saved:
            raise KeyboardInterrupt
        saved.append(real_save(*args, **kwargs))
        return saved[-1]

    monkeypatch.setattr(components, "save_volume", save_then_interrupt)
    assert _translate(phantom_file, tiny_weights, out, "-n", "3", "--seed", "2") == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_translate_bad_input_exits_2_and_writes_nothing(tiny_weights, tmp_path, capsys):
    bad = write_nifti(tmp_path / "flat.nii.gz", np.zeros((8, 8, 4), np.float32))
    out = tmp_path / "out"
    rc = _translate(bad, tiny_weights, out)
    assert rc == 2 and "flat.nii.gz" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert _translate(bad, tmp_path / "missing.pt", out) == 2


@pytest.mark.parametrize("row", [[float("nan")] * 4, [1e300] * 4, ["a"] * 4, [0.1] * 3])
def test_codes_that_are_not_finite_numbers_or_not_the_models_width_are_refused_naming_the_file(
    tiny_weights, phantom_file, tmp_path, row, capsys
):
    codes = tmp_path / "codes.json"
    codes.write_text(json.dumps({"codes": [row]}))  # NaN: the bare token NaN; the nz is 4
    out = tmp_path / "out"
    assert _translate(phantom_file, tiny_weights, out, "--codes", str(codes)) == 2
    assert "codes.json" in capsys.readouterr().err
    assert not out.exists()


def test_a_deterministic_baseline_says_which_sampling_options_it_ignores(phantom_file, tmp_path, capsys):
    args = ["-i", str(phantom_file), "--source", "t1", "--target", "flair", "-o", str(tmp_path / "out")]
    assert _cli("translate", *args, "--method", "identity", "--samples", "3", "--mask", "none") == 0
    assert "--method identity is deterministic: --samples ignored" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["bicyclegan", "identity"])
@pytest.mark.parametrize("problem", ["empty", "other grid"])
def test_every_method_refuses_an_empty_mask_or_one_on_another_grid(
    tiny_weights, phantom_file, tmp_path, method, problem
):
    image = nib.load(phantom_file)
    inside = (
        np.zeros(image.shape, np.uint8) if problem == "empty" else (image.get_fdata() > 0).astype(np.uint8)
    )
    affine = image.affine if problem == "empty" else image.affine @ np.diag([2.0, 1.0, 1.0, 1.0])
    mask = write_nifti(tmp_path / "mask.nii.gz", inside, affine)
    out = tmp_path / "out"
    assert _translate(phantom_file, tiny_weights, out, "--mask", str(mask), "--method", method) == 2
    assert not (out / "mean.nii.gz").exists()


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_numpy_cannot_take_is_refused(tiny_weights, phantom_file, tmp_path, seed):
    with pytest.raises(SystemExit) as stop:  # by the parser, before the start-up
        _translate(phantom_file, tiny_weights, tmp_path / "out", "--seed", seed)
    assert stop.value.code == 2 and not (tmp_path / "out").exists()


def test_a_baseline_refuses_an_unknown_modality(phantom_file, tmp_path):
    args = ["-i", str(phantom_file), "--source", "foo", "--target", "bar", "-o", str(tmp_path / "out")]
    assert _cli("translate", *args, "--method", "identity") == 2


def test_lpips_unavailable_names_the_missing_backbone(tmp_path):
    metric, status = load_lpips(backbone_path=tmp_path / "alexnet-owt-7be5be79.pth")
    assert metric is None and not status.available
    assert "alexnet-owt-7be5be79.pth" in status.reason


def test_lpips_loads_backbone_from_file_not_random(tmp_path):
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path / "alex.pth"
    torch.save(state, path)
    metric, status = load_lpips(backbone_path=path)
    assert status.available
    assert torch.equal(getattr(metric.net.slice1, "0").weight, state["features.0.weight"])
    assert torch.equal(getattr(metric.net.slice5, "10").weight, state["features.10.weight"])
    img = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    same = sample_measures(np.stack([img, img, img]), img, lpips_metric=metric)
    assert same["lpips_diversity"] == pytest.approx(0.0, abs=1e-6)
    assert same["lpips_realism"] == pytest.approx(0.0, abs=1e-6)


def test_weight_free_diversity_measures():
    rng = np.random.default_rng(0)
    truth = rng.random((2, 32, 32)).astype(np.float32)
    identical = sample_measures(np.stack([truth] * 3), truth)
    assert identical["pairwise_l1"] == 0 and identical["pairwise_1_minus_ssim"] == pytest.approx(0, abs=1e-6)
    assert identical["ssim_mean"] == pytest.approx(1.0)
    noisy = sample_measures(np.clip(truth + 0.1 * rng.standard_normal((3, 2, 32, 32)), 0, 1), truth)
    assert noisy["pairwise_l1"] > 0.05 and len(noisy["psnr_samples"]) == 3
    assert noisy["psnr_mean"] > max(noisy["psnr_samples"])  # averaging samples removes independent noise
    assert consecutive_pairs(5) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_masked_sample_measures_ignore_what_lies_outside_the_mask():
    rng = np.random.default_rng(1)
    truth = rng.random((2, 32, 32)).astype(np.float32)
    brain = np.zeros(truth.shape, bool)
    brain[:, 8:24, 8:24] = True
    samples = np.clip(truth + 0.05 * rng.standard_normal((3, 2, 32, 32)), 0, 1).astype(np.float32)
    far = np.ones(truth.shape, bool)
    far[:, 2:30, 2:30] = False  # beyond the SSIM window (radius 5) of every pixel in the mask
    wild = np.where(far, rng.random(samples.shape), samples).astype(np.float32)  # other noise out there
    inside, outside_changed = (sample_measures(x, truth, mask=brain) for x in (samples, wild))
    assert inside == outside_changed
    assert inside["psnr_mean"] != sample_measures(wild, truth)["psnr_mean"]  # unmasked, the outside counts


def test_translation_of_real_brats_slab(brats_case, tmp_path):
    """Shipped T1 -> FLAIR weights on a slab of a real case (a training subject: smoke test, not a score)."""
    from mtsr_monai.inference.translate import default_weights
    from mtsr_monai.io import load_volume
    from mtsr_monai.transforms.intensity import robust_scale

    weights = default_weights("t1", "flair")
    if not weights.is_file():
        pytest.skip(f"no shipped weights at {weights}")
    g, meta = load_translator(weights)
    t1, flair = load_volume(brats_case["t1"]), load_volume(brats_case["flair"])
    slab = slice(70, 74)
    codes = np.zeros((1, meta["nz"]), np.float32)
    out = translate_volume(
        t1.numpy()[..., slab], np.asarray(t1.affine), g, meta["image_size"], codes, progress=False
    )[0]
    truth = robust_scale(torch.as_tensor(flair.numpy()[..., slab])).numpy()
    t1s = robust_scale(torch.as_tensor(t1.numpy()[..., slab])).numpy()
    brain = truth > 0
    err_model = np.abs(out - truth)[brain].mean()
    err_identity = np.abs(t1s - truth)[brain].mean()
    assert err_model < err_identity  # the model moves T1 toward FLAIR


@pytest.mark.parametrize(
    "samples, seed, problem", [(0, 0, "samples must be >= 1"), (2, -1, "seed must be >= 0")]
)
def test_the_bundle_inferer_refuses_no_samples_and_a_negative_seed(samples, seed, problem):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.components import SliceTranslationInferer

    inferer = SliceTranslationInferer(image_size=128, samples=samples, seed=seed)
    with pytest.raises(InputError, match=problem):
        inferer.latent_codes()


class _BatchRecorder(torch.nn.Module):
    """Stands for a generator: returns its input and records how many slices each call saw."""

    nz = 2

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x


def test_large_slices_are_translated_fewer_at_a_time_so_memory_stays_bounded():
    from mtsr_monai.inference.translate import MAX_BATCH_PIXELS, translate_volume

    small, large = _BatchRecorder(), _BatchRecorder()
    codes = np.zeros((1, 2), np.float32)
    for recorder, size in ((small, 64), (large, 400)):
        volume = np.ones((size, size, 20), np.float32)
        translate_volume(volume, np.eye(4), recorder, 32, codes, progress=False, native_resolution=True)
    assert small.batches == [16, 4]  # 20 slices of 64 x 64
    assert max(large.batches) == MAX_BATCH_PIXELS // (416 * 416) < 16 and sum(large.batches) == 20


def test_sample_psnr_is_one_aggregation_with_or_without_a_mask():
    """The same pixels scored unmasked and with an all-ones mask give the same PSNR and L1 (pooled error)."""
    from mtsr_monai.metrics.perceptual import sample_measures

    rng = np.random.default_rng(0)
    truth = rng.random((3, 24, 24)).astype(np.float32)
    # slices of very different error: a mean of per-slice PSNRs would differ from the pooled one
    truth[0] *= 0.1
    samples = np.clip(truth[None] + rng.normal(0, [[[[0.01]], [[0.2]], [[0.05]]]], (2, 3, 24, 24)), 0, 1)
    plain = sample_measures(samples, truth)
    masked = sample_measures(samples, truth, mask=np.ones(truth.shape, bool))
    np.testing.assert_allclose(plain["psnr_samples"], masked["psnr_samples"], rtol=1e-6)
    assert plain["psnr_mean"] == pytest.approx(masked["psnr_mean"], rel=1e-6)
    assert plain["pairwise_l1"] == pytest.approx(masked["pairwise_l1"], rel=1e-6)


def test_evaluation_slices_do_not_depend_on_how_the_volume_is_stored():
    from mtsr_monai.inference.translation_eval import EvaluationSlicesd

    rng = np.random.default_rng(0)
    t1 = rng.random((12, 10, 9)).astype(np.float32)
    flair = np.where(rng.random((12, 10, 9)) > 0.2, t1 + 1, 0).astype(np.float32)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # L, P, S: the training order

    def slices(flip: tuple[int, ...]) -> dict:
        affine = lps.copy()
        for k in flip:  # the same image stored with axis k reversed
            affine[:3, 3] += affine[:3, k] * (t1.shape[k] - 1)
            affine[:3, k] *= -1
        item = {"t1": torch.from_numpy(np.flip(t1, flip).copy())[None], "affine": affine}
        item["flair"] = torch.from_numpy(np.flip(flair, flip).copy())[None]
        return EvaluationSlicesd("t1", "flair", slices_per_volume=3)(item)

    stored, ras, upside_down = slices(()), slices((0, 1)), slices((2,))
    for other in (ras, upside_down):
        assert torch.equal(other["image"], stored["image"]) and torch.equal(other["label"], stored["label"])
    assert ras["slices"].tolist() == stored["slices"].tolist()
    assert upside_down["slices"].tolist() == [8 - i for i in stored["slices"].tolist()]  # stored indices
