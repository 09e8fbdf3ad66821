"""The MT bundle's evaluate.yaml (dataset, inferer, postprocessing, SupervisedEvaluator and its report
handler) gives the numbers of the former one-function evaluation, restated here from its primitives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtsr_monai.data.slices import load_subject
from mtsr_monai.engines.bicyclegan import export_generator
from mtsr_monai.inference.translate import (
    latent_codes,
    load_translator,
    restore_target_scaling,
    translate_slices,
    volume_settings,
)
from mtsr_monai.inference.translation_eval import evaluate_translation
from mtsr_monai.io.geometry import resolve_axis
from mtsr_monai.metrics import perceptual
from mtsr_monai.networks.bicyclegan import LatentUNetGenerator
from tests.conftest import write_nifti
from tests.test_bundle_configs import _configs
from tests.test_bundle_zoo import _head

META = {"source": "t1", "target": "flair", "method": "bicyclegan", "nz": 4, "ngf": 8, "image_size": 32}
META_CASES = {
    # the shipped weights' handling: padded native slices, median-scaled target, each sample's own level
    "native_median": {"native_resolution": True, "target_scaling": "median", "iterations": 7},
    # resized slices, robust target, codes from an encoder's posterior
    "resized_prior": {"code_prior": {"mean": [0.5, -0.5, 0.0, 1.0], "std": [1.0, 0.5, 2.0, 1.0]}},
}


def _former_evaluation(subjects: list[dict], weights: Path, samples: int, slices: int, metric) -> list[dict]:
    """Per-subject rows of the evaluation evaluate.yaml replaced (one Python loop), for the comparison."""
    generator, meta = load_translator(weights)
    codes = torch.from_numpy(latent_codes(samples, int(meta["nz"]), 0, meta.get("code_prior")))
    settings = volume_settings(meta)
    rows = []
    for subject in subjects:
        vol = load_subject(subject, ["t1", "flair"], mask_key=None)
        axis = resolve_axis(vol["affine"], "axial")
        a, b = (vol[k][0].movedim(axis, 0) for k in ("t1", "flair"))
        brain = (b > 0).flatten(1).float().mean(1)
        candidates = torch.nonzero(brain >= 0.5 * brain.max()).flatten()
        picks = candidates[torch.linspace(0, len(candidates) - 1, slices).round().long()]
        a_sel = torch.where(b[picks] > 0, a[picks], torch.zeros(()))
        out = translate_slices(
            generator, a_sel, codes, int(meta["image_size"]), native_resolution=settings["native_resolution"]
        ).numpy()
        out = out * (a_sel.numpy() > 0)[None]
        out = restore_target_scaling(out, settings["target_scaling"], settings["target_level"])
        measures = perceptual.sample_measures(out, b[picks].numpy(), lpips_metric=metric)
        rows.append({"subject": subject["subject"], "slices": picks.tolist(), **measures})
    return rows


class _StandInLpips(torch.nn.Module):
    """An LPIPS-shaped distance (one value per image pair): no ImageNet backbone file here."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().mean((1, 2, 3), keepdim=True)


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_evaluate_config_gives_the_former_evaluation_numbers(case, tmp_path, monkeypatch):
    from monai.bundle import run

    torch.manual_seed(0)
    meta = {**META, **META_CASES[case]}
    generator = LatentUNetGenerator(nz=4, ngf=8, image_size=32)
    weights = export_generator(generator, tmp_path / "t1_to_flair.pt", meta)
    subjects = [{"subject": f"s{i}"} for i in range(2)]
    for i, subject in enumerate(subjects):
        for j, key in enumerate(("t1", "flair")):
            head = _head((40, 36, 12), i + 10 * j, 100 + 50 * j)
            lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # stored as BraTS is: the training order, no reordering
            subject[key] = str(write_nifti(tmp_path / f"s{i}_{key}.nii.gz", head, lps))
    no_target = {"subject": "s2", "t1": subjects[0]["t1"]}  # skipped (BraTS CBICA_AOO_1 has no T2)
    (tmp_path / "datalist.json").write_text(json.dumps({"test": [*subjects, no_target]}))
    status = perceptual.LpipsStatus(True, "alex", "stand-in")
    monkeypatch.setattr(perceptual, "load_lpips", lambda **_: (_StandInLpips(), status))

    out = tmp_path / "eval"
    settings = {"checkpoint": str(weights), "samples": 3, "slices_per_volume": 2}
    run("evaluating", **_configs("mtsr_mt", "evaluate.yaml"), datalist=str(tmp_path / "datalist.json"),
        output_dir=str(out), **settings)  # fmt: skip
    report = json.loads((out / "t1_to_flair_metrics.json").read_text())

    expected = _former_evaluation(subjects, weights, 3, 2, _StandInLpips())
    assert report["subjects"] == expected  # the same floats, not close ones
    assert report["summary"]["lpips_diversity"] > 0 and "lpips_realism" in report["summary"]
    scalar = [k for k, v in expected[0].items() if isinstance(v, float)]
    assert report["summary"] == {k: float(np.mean([row[k] for row in expected])) for k in scalar}
    header = {"source": "t1", "target": "flair", "weights": str(weights), "method": "bicyclegan"}
    header |= {"training_iterations": meta.get("iterations"), "samples": 3, "seed": 0}
    header["lpips"] = status.as_dict()
    assert list(report) == [*header, "summary", "subjects"]
    assert {k: report[k] for k in header} == header
    # the Python entry runs the same declared objects and returns what the bundle writes
    assert evaluate_translation(subjects, "t1", "flair", weights, samples=3, slices_per_volume=2) == report


def test_an_empty_split_is_refused_as_the_clinical_evaluation_refuses_it(tmp_path):
    from monai.bundle import run

    from mtsr_monai.errors import InputError

    datalist = tmp_path / "datalist.json"
    # the validation split: MONAI's datalist reader itself fails (IndexError) on an empty "test" list
    datalist.write_text(json.dumps({"test": [{"subject": "s0"}], "validation": []}))
    with pytest.raises(RuntimeError) as failed:  # MONAI's config evaluation wraps the error
        run("evaluating", **_configs("mtsr_mt", "evaluate.yaml"), datalist=str(datalist), split="validation",
            output_dir=str(tmp_path / "eval"))  # fmt: skip
    assert isinstance(failed.value.__cause__, InputError)
    assert (
        str(failed.value.__cause__)
        == f"{datalist}: no held-out subject to evaluate in split validation with t1 and flair"
    )
    assert not (tmp_path / "eval").exists()
    with pytest.raises(
        InputError, match="^no held-out subject to evaluate in the given list with t1 and flair$"
    ):
        evaluate_translation([], "t1", "flair", tmp_path / "none.pt")
