"""The clinical bundle's declared held-out evaluation (configs/evaluate.yaml: preprocessing, inferer,
postprocessing, SupervisedEvaluators) gives the numbers of the loop it replaced, on a tiny case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, write_nifti
from tests.test_bundle_zoo import _head

BUNDLE = REPO / "bundles" / "clinical_sr"
MODALITIES = ["flair", "t1", "t2"]
# not the defaults: the weights' protocols are the ones simulated
PROTOCOLS = {m: {"thickness": t, "axis": "coronal"} for m, t in zip(MODALITIES, (5.0, 3.0, 4.0), strict=True)}


def _tiny_case(root: Path) -> dict:
    """Two test subjects (40 x 40 x 12 heads), and small random weights saved as the shipped ones are
    (fp16 generator, its arguments, channel order, patch size, protocols)."""
    from mtsr_monai.networks.attention_unet import AttentionGatedUNet

    items = []
    for i in range(2):
        item = {"subject": f"s{i}"}
        for j, m in enumerate(MODALITIES):
            write_nifti(root / f"s{i}_{m}.nii.gz", _head((40, 40, 12), i + 10 * j, 100 + 50 * j))
            item[m] = f"s{i}_{m}.nii.gz"
        items.append(item)
    (root / "datalist.json").write_text(json.dumps({"training": [], "validation": [], "test": items}))
    torch.manual_seed(0)
    args = {
        "spatial_dims": 2,
        "in_channels": 3,
        "out_channels": 3,
        "filters": 8,
        "depth": 3,
        "residual": True,
    }
    weights = {k: v.half() for k, v in AttentionGatedUNet(**args).state_dict().items()}
    checkpoint = {"model": weights, "network": args, "modalities": MODALITIES, "patch_size": 16}
    torch.save({**checkpoint, "protocols": PROTOCOLS}, root / "model.pt")
    return {
        "datalist": str(root / "datalist.json"),
        "dataset_dir": str(root),
        "model_path": str(root / "model.pt"),
    }


def _earlier_loop(case: dict, cache_dir: str | None, baselines: list[str]) -> dict:
    """The held-out evaluation as mtsr_monai.inference.clinical.evaluate_heldout computed it before the
    bundle declared it: pairs per method, the trilinear ones restored on axial slices, scored, averaged."""
    from mtsr_monai.data.clinical import cached_pairs
    from mtsr_monai.data.datalist import read_split
    from mtsr_monai.inference.clinical import load_clinical_model, restore_volume, volume_metrics

    subjects = read_split(case["datalist"], "test", case["dataset_dir"])
    ckpt = load_clinical_model(case["model_path"])
    rows = []
    methods = ("trilinear", *[b for b in baselines if b != "trilinear"])
    for method in methods:
        for p in cached_pairs(subjects, cache_dir, MODALITIES, ckpt["protocols"], "header", method, False):
            rows.append(
                {"subject": p["subject"], "method": method, **volume_metrics(p["lr"], p["hr"], p["mask"])}
            )
            if method == "trilinear":
                pred = restore_volume(ckpt["network"], p["lr"], 2, 8, ckpt["patch_size"])
                rows.append(
                    {"subject": p["subject"], "method": "model", **volume_metrics(pred, p["hr"], p["mask"])}
                )
    summary = {"subjects": [s["subject"] for s in subjects], "pairing": "header"}
    for method in ("model", *methods):
        sel = [r for r in rows if r["method"] == method]
        summary[method] = {k: float(np.mean([r[k] for r in sel])) for k in ("mae", "nmse", "psnr", "ssim")}
    return {**summary, "rows": rows}


def _run_bundle(case: dict, output_dir: Path, **overrides) -> None:
    from monai.bundle import run

    config = {
        "config_file": str(BUNDLE / "configs" / "evaluate.yaml"),
        "meta_file": str(BUNDLE / "configs" / "metadata.json"),
        "logging_file": str(BUNDLE / "configs" / "logging.conf"),
        "bundle_root": str(BUNDLE),
    }
    # as the config's header runs it: the default run id ("run"; "evaluating" is the same list)
    run(**config, **case, output_dir=str(output_dir), **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("cached", [False, True])
def test_declared_evaluation_gives_the_numbers_of_the_earlier_loop(tmp_path, capsys, cached):
    case = _tiny_case(tmp_path)
    baselines = ["bspline", "trilinear", "sinc"]  # trilinear is scored first whatever the order
    # each side its own cache: both make their pairs (and read them back from the cache, as float16)
    caches = {side: str(tmp_path / f"cache_{side}") if cached else None for side in ("old", "new")}
    expected = _earlier_loop(case, caches["old"], baselines)
    capsys.readouterr()
    _run_bundle(case, tmp_path / "run", cache_dir=caches["new"], baselines=baselines)
    written = (tmp_path / "run" / "heldout.json").read_text()
    assert written == json.dumps(expected, indent=1)  # same keys, order and numbers
    assert [r["method"] for r in expected["rows"][:4]] == ["trilinear", "model", "trilinear", "model"]
    out = capsys.readouterr()
    summary = {k: v for k, v in expected.items() if k != "rows"}
    assert json.dumps(summary, indent=1) in out.out
    # the stage bar and the pairs' bars on stderr, none of them on stdout
    assert "clinical evaluation" in out.err and "interpolation: trilinear, bspline, sinc" in out.err
    assert "clinical evaluation" not in out.out


def test_no_test_subject_left_is_refused_without_a_report(tmp_path):
    from mtsr_monai.errors import InputError

    case = _tiny_case(tmp_path)
    with pytest.raises(RuntimeError) as failed:  # MONAI's config evaluation wraps the error
        _run_bundle(case, tmp_path / "run", trained_on=["s0", "s1"], progress=False)
    assert isinstance(failed.value.__cause__, InputError)
    message = str(failed.value.__cause__)
    assert message.startswith(case["datalist"] + ": no held-out subject to evaluate in split test, less")
    assert not (tmp_path / "run" / "heldout.json").exists()


def _scored(pairs: list[tuple[str, float]]) -> list[dict]:
    """Evaluator outputs of pairs ``(interpolation, value)``: every score ``value`` (PSNR ``10 value``)."""
    return [
        {"label": {"interpolation": m}, "scores": {"mae": v, "nmse": v, "psnr": 10 * v, "ssim": v}}
        for m, v in pairs
    ]


def test_the_heldout_means_are_the_validation_means_of_each_interpolations_pairs():
    from ignite.engine import Engine
    from ignite.exceptions import NotComputableError
    from ignite.metrics import Average

    from mtsr_monai.inference.clinical import mean_score
    from mtsr_monai.inference.heldout import mean_scores

    outputs = _scored([("trilinear", 0.1), ("sinc", 0.3), ("trilinear", 0.2)])
    engine = Engine(lambda engine, batch: batch)
    validation = {"val_psnr": mean_score("psnr"), "val_ssim": mean_score("ssim")}
    metrics = {**mean_scores("trilinear", "trilinear"), **mean_scores("sinc", "sinc"), **validation}
    assert all(isinstance(m, Average) for m in metrics.values())  # one mean: Ignite's, as in training
    assert list(mean_scores("model")) == ["model_psnr", "model_mae", "model_nmse", "model_ssim"]
    for name, metric in metrics.items():
        metric.attach(engine, name)
    got = engine.run(outputs).metrics
    assert got["trilinear_ssim"] == pytest.approx(0.15) and got["trilinear_psnr"] == pytest.approx(1.5)
    assert got["sinc_mae"] == pytest.approx(0.3) and got["val_ssim"] == pytest.approx(0.2)
    assert got["val_psnr"] == pytest.approx(2.0)
    other = Engine(lambda engine, batch: batch)
    mean_scores("bspline", "bspline")["bspline_psnr"].attach(other, "bspline_psnr")
    with pytest.raises(NotComputableError):  # no pair of that interpolation was scored
        other.run(outputs)


def test_an_empty_subject_list_is_refused_naming_the_datalist():
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.heldout import require_subjects

    require_subjects([{"subject": "s0"}], "split test", "datalist.json")
    with pytest.raises(InputError, match=r"^datalist.json: no held-out subject to evaluate in split test$"):
        require_subjects([], "split test", "datalist.json")
    with pytest.raises(InputError, match=r"^no held-out subject to evaluate in the given list$"):
        require_subjects([], "the given list")


def test_evaluate_config_has_the_zoo_properties(tmp_path):
    from monai.bundle import ConfigWorkflow

    case = _tiny_case(tmp_path)
    workflow = ConfigWorkflow(
        workflow_type="eval",
        config_file=str(BUNDLE / "configs" / "evaluate.yaml"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        bundle_root=str(BUNDLE),
        output_dir=str(tmp_path / "run"),
        progress=False,
        **case,
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_the_weights_headroom_and_training_subjects_decide_the_input_scaling_and_who_is_scored(tmp_path):
    from monai.bundle import ConfigParser

    case = _tiny_case(tmp_path)
    checkpoint = torch.load(case["model_path"], weights_only=False)
    checkpoint.update(intensity_headroom=1.25, recipe={"training_subjects": ["s0"]})
    torch.save(checkpoint, case["model_path"])
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "evaluate.yaml"))
    parser.update({"bundle_root": str(BUNDLE), **case})
    assert parser.get_parsed_content("inferer").headroom == 1.25  # as inference.yaml runs the model
    assert [s["subject"] for s in parser.get_parsed_content("subjects")] == ["s1"]
