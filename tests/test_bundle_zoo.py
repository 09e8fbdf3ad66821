"""The model zoo's rules for the three bundles, checked with MONAI's own functions: metadata against the
schema, the network's input/output, the workflow properties of the inference and training configs, pinned
packages, licences, README sections, JSON layout, and TorchScript / ONNX exports against eager outputs on a
real slice (onnxruntime)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, ellipsoid, unit_grid, write_nifti

BUNDLES = ["mtsr_sr", "mtsr_mt", "clinical_sr"]
# model.pt key of the network weights (mtsr_sr and mtsr_mt hold a plain state dict) and an export input shape
EXPORT = {
    "mtsr_sr": ("", [1, 1, 32, 32]),
    "mtsr_mt": ("", [1, 1, 128, 128]),
    "clinical_sr": ("model", [1, 3, 64, 64]),
}
README_SECTIONS = ["Authors", "Tags", "Model Description", "Data", "Performance", "System Configuration"]


def _configs(bundle: str) -> dict[str, str]:
    root = REPO / "bundles" / bundle
    return {
        "meta_file": str(root / "configs" / "metadata.json"),
        "config_file": str(root / "configs" / "inference.yaml"),
        "bundle_root": str(root),
    }


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_verifies_against_the_schema(bundle):
    pytest.importorskip("jsonschema", reason="monai.bundle.verify_metadata needs jsonschema")
    from monai.bundle import verify_metadata

    root = REPO / "bundles" / bundle / "configs"
    verify_metadata(meta_file=str(root / "metadata.json"), filepath=str(root / "schema.json"))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_network_in_out_verifies_with_one_input(bundle):
    from monai.bundle import verify_net_in_out

    # no extra_forward_args, as the zoo calls it: the MT generator's latent code defaults to z = 0
    verify_net_in_out(net_id="network_def", device="cpu", **_configs(bundle))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_config_has_the_zoo_properties(bundle, tmp_path):
    from monai.bundle import ConfigWorkflow

    c = _configs(bundle)
    workflow = ConfigWorkflow(
        workflow_type="infer",
        config_file=c["config_file"],
        meta_file=c["meta_file"],
        bundle_root=c["bundle_root"],
        dataset_dir=str(tmp_path),
        output_dir=str(tmp_path / "out"),
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def _head(shape: tuple[int, ...], seed: int, scale: float = 100.0) -> np.ndarray:
    x, y, _ = unit_grid(shape)
    rng = np.random.default_rng(seed)
    inside = ellipsoid(shape, (0.8, 0.7, 1.0))
    return (
        inside * scale * (1 + 0.3 * np.sin(8 * x + seed) * np.cos(6 * y) + 0.05 * rng.random(shape))
    ).astype(np.float32)


def _train_overrides(bundle: str, root: Path) -> dict:
    """A tiny datalist and network for each bundle's train.yaml."""
    keys = {"mtsr_sr": ["hr"], "mtsr_mt": ["t1", "flair"], "clinical_sr": ["flair", "t1", "t2"]}[bundle]
    items = []
    for i in range(2):
        item = {"subject": f"s{i}"}
        for j, key in enumerate(keys):
            name = f"s{i}_{key}.nii.gz"
            write_nifti(root / name, _head((40, 40, 12), i + 10 * j, 100 + 50 * j))
            item[key] = name if bundle == "clinical_sr" else str(root / name)
        items.append(item)
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"training": items[:1], "validation": items[1:], "test": items[1:]}))
    common = {"datalist": str(datalist), "output_dir": str(root / "run"), "dataset_dir": str(root)}
    tiny = {
        "mtsr_sr": {
            "network_def#features": 8,
            "network_def#growth": 4,
            "network_def#num_blocks": 2,
            "keep_blocks": [0],
            "loss_weights#vgg": 0,  # no VGG19 ImageNet file here
        },
        "mtsr_mt": {"image_size": 32, "ngf": 8, "nef": 8, "ndf": 8},
        "clinical_sr": {
            "filters": 8,
            "patch_size": 16,
            "samples_per_scan": 2,
            "cache_dir": str(root / "cache"),
        },
    }[bundle]
    return {**common, **tiny}


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_config_has_the_zoo_properties(bundle, tmp_path):
    from monai.bundle import ConfigWorkflow

    c = _configs(bundle)
    workflow = ConfigWorkflow(
        workflow_type="train",
        config_file=str(REPO / "bundles" / bundle / "configs" / "train.yaml"),
        meta_file=c["meta_file"],
        bundle_root=c["bundle_root"],
        **_train_overrides(bundle, tmp_path),
    )
    workflow.initialize()
    assert workflow.check_properties() == []


@pytest.mark.parametrize("bundle", BUNDLES)
def test_required_packages_are_installable_releases(bundle):
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    pins = meta["required_packages_version"]
    # the zoo installs each as name==version: only released versions (these were installed from the index)
    assert "mtsr-monai" not in pins
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, name


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_has_licences_and_a_readme_in_the_zoo_layout(bundle):
    root = REPO / "bundles" / bundle
    assert "Apache License" in (root / "LICENSE").read_text()
    assert "BraTS" in (root / "docs" / "data_license.txt").read_text()
    readme = (root / "docs" / "README.md").read_text()
    headings = [line.strip("# *").strip() for line in readme.splitlines() if line.startswith("#")]
    assert all(section in headings for section in README_SECTIONS), headings


def test_json_files_are_indented_by_four():
    for path in sorted((REPO / "bundles").rglob("*.json")):
        text = path.read_text()
        assert text.rstrip("\n") == json.dumps(json.loads(text), indent=4), path


def test_mt_model_pt_is_the_t1_to_flair_generator():
    models = REPO / "bundles" / "mtsr_mt" / "models"
    model = torch.load(models / "model.pt", weights_only=True)
    generator = torch.load(models / "t1_to_flair.pt", weights_only=True)["generator"]
    assert model.keys() == generator.keys(), "stale model.pt: run scripts/make_mt_model_pt.py"
    assert all(torch.equal(model[k], generator[k]) for k in model), (
        "stale model.pt: run scripts/make_mt_model_pt.py"
    )


def _real_input(bundle: str, case: dict[str, Path]) -> torch.Tensor:
    """A real BraTS axial slice crop, scaled as the bundle's inference scales it."""
    from mtsr_monai.io import load_volume
    from mtsr_monai.transforms.intensity import robust_scale

    shape = EXPORT[bundle][1]
    names = ["flair", "t1", "t2"] if bundle == "clinical_sr" else ["t1"]
    channels = []
    for name in names:
        vol = robust_scale(load_volume(case[name]).as_tensor()).numpy()
        h, w = shape[2:]
        channels.append(vol[120 - h // 2 : 120 + h // 2, 120 - w // 2 : 120 + w // 2, 77])
    x = torch.from_numpy(np.stack(channels)[None].astype(np.float32))
    return x * 2 - 1 if bundle == "mtsr_mt" else x


def _eager(bundle: str) -> torch.nn.Module:
    from mtsr_monai.inference.bundle import bundle_parser

    net = bundle_parser(bundle).get_parsed_content("network_def")
    state = torch.load(REPO / "bundles" / bundle / "models" / "model.pt", weights_only=True)
    key = EXPORT[bundle][0]
    net.load_state_dict(state[key] if key else state)
    return net.float().eval()


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_ckpt_export_traces_and_matches_eager_on_a_real_slice(bundle, brats_case, tmp_path):
    from monai.bundle import ckpt_export

    key, shape = EXPORT[bundle]
    c = _configs(bundle)
    path = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(path),
        ckpt_file=str(REPO / "bundles" / bundle / "models" / "model.pt"),
        key_in_ckpt=key,
        use_trace=True,
        input_shape=shape,
        **c,
    )
    x = _real_input(bundle, brats_case)
    with torch.no_grad():
        expected = _eager(bundle)(x)
        got = torch.jit.load(str(path))(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_onnx_export_runs_in_onnxruntime_like_eager_on_a_real_slice(bundle, brats_case, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (test extra)")
    # the documented command line, in its own process (a fresh exporter state)
    key, shape = EXPORT[bundle]
    path = tmp_path / "model.onnx"
    c = _configs(bundle)
    cmd = [sys.executable, "-m", "monai.bundle", "onnx_export", "network_def", "--filepath", str(path)]
    cmd += ["--ckpt_file", str(REPO / "bundles" / bundle / "models" / "model.pt")]
    cmd += ["--key_in_ckpt", key] if key else []
    cmd += [
        "--meta_file",
        c["meta_file"],
        "--config_file",
        c["config_file"],
        "--bundle_root",
        c["bundle_root"],
    ]
    cmd += ["--use_trace", "True", "--input_shape", json.dumps(shape)]
    cmd += ["--converter_kwargs", "{'dynamic_axes': {'x': {0: 'n', 2: 'h', 3: 'w'}}}"]  # as the README
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    x = _real_input(bundle, brats_case)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = torch.cat([x, x.flip(-1)])  # another batch size, and (but MT's 128 grid) another slice size
    h, w = shape[2:]
    for batch in (x, other if bundle == "mtsr_mt" else other[..., : h * 3 // 4, : w // 2]):
        got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
        with torch.no_grad():
            expected = _eager(bundle)(batch).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.slow
def test_mt_onnx_export_with_the_latent_code_as_a_second_input(brats_case, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (test extra)")
    from monai.networks import convert_to_onnx

    net = _eager("mtsr_mt")
    x = _real_input("mtsr_mt", brats_case)
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((1, net.nz)).astype(np.float32))
    path = tmp_path / "translator.onnx"
    convert_to_onnx(
        net,
        inputs=[x, z],
        input_names=["image", "z"],
        output_names=["pred"],
        use_trace=True,
        filename=str(path),
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy(), "z": z.numpy()})[0]
    with torch.no_grad():
        expected = net(x, z).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert not np.allclose(got, net(x).detach().numpy(), atol=1e-3)  # the code is an input, not a constant
