"""The MONAI Label app: a real server on 127.0.0.1 over a small study folder, /info and /infer of each model,
the returned volumes' shape and affine checked against the input (x4 in-plane for SR, same field of view).

MONAI Label 0.8.5 lives in its own environment (numpy < 2): ``.venv-label`` beside the repository (made by
``.ci/run``) or ``$MTSR_LABEL_PYTHON``; without one the test skips saying so.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import REPO, SHARED_DATA, write_nifti

LABEL_PYTHON = Path(os.environ.get("MTSR_LABEL_PYTHON", REPO / ".venv-label" / "bin" / "python"))
#: a raw clinical T1 with its skull (320 x 320 x 39), served beside the synthetic study when ../shared is here
HEAD_T1 = SHARED_DATA / "open_ms_longitudinal_raw" / "patient12_study1" / "study1_T1W.nii.gz"
AFFINE = np.array([[1.0, 0, 0, -16], [0, 1.0, 0, -18], [0, 0, 4.0, -10], [0, 0, 0, 1]])


def _study(folder: Path) -> None:
    """Two routine studies of a textured ellipsoid 'head': ``case`` with FLAIR and T1 on one 1 x 1 x 4 mm
    grid, ``pair`` with its T1 on a grid of its own (3 mm slices, another field of view), as scanned."""
    rng = np.random.default_rng(0)
    t1_affine = np.array([[1.0, 0, 0, -14], [0, 1.0, 0, -16], [0, 0, 3.0, -9], [0, 0, 0, 1]])
    for study, name, outer, inner, shape, affine in (
        ("case", "flair", 300, 200, (24, 28, 4), AFFINE),
        ("case", "t1", 150, 400, (24, 28, 4), AFFINE),
        ("pair", "flair", 300, 200, (24, 28, 4), AFFINE),
        ("pair", "t1", 150, 400, (20, 24, 5), t1_affine),
    ):
        x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
        r = x**2 + y**2 + z**2
        vol = np.where(r < 0.8, outer + 20 * np.sin(9 * x) + 5 * rng.standard_normal(r.shape), 0)
        vol += np.where(r < 0.4, inner, 0)
        write_nifti(folder / f"{study}_{name}.nii.gz", vol.astype(np.float32), affine)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 600) -> dict:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.poll() is not None:
            pytest.fail(f"MONAI Label server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(2)
    pytest.fail(f"MONAI Label server did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _outer_corners(img: nib.Nifti1Image) -> np.ndarray:
    """World positions of the two outer voxel corners: the field of view."""
    lo = img.affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    hi = img.affine @ np.array([*(np.array(img.shape) - 0.5), 1.0])
    return np.stack([lo[:3], hi[:3]])


def _wait_for_a_background_build(timeout: float = 1800) -> None:
    """``.ci/run`` builds ``.venv-label`` while the suite runs and names a status file in
    ``MTSR_LABEL_ENV_STATUS``: wait for it, and fail (not skip) if the build failed."""
    status = os.environ.get("MTSR_LABEL_ENV_STATUS")
    if not status:
        return
    path, start = Path(status), time.monotonic()
    while not path.is_file():
        if time.monotonic() - start > timeout:
            pytest.fail(f"the MONAI Label environment build did not finish within {timeout} s ({path})")
        time.sleep(2)
    code = path.read_text().strip()
    if code != "0":
        log = path.with_suffix(".log")
        tail = log.read_text()[-3000:] if log.is_file() else "(no log)"
        pytest.fail(f"the MONAI Label environment build failed (exit {code}):\n{tail}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _wait_for_a_background_build()
    if not LABEL_PYTHON.is_file():
        pytest.skip(
            f"no MONAI Label environment at {LABEL_PYTHON} (.ci/run makes it; or set MTSR_LABEL_PYTHON)"
        )
    from mtsr_monai.label import prepare_app_dir

    app = prepare_app_dir(tmp_path_factory.mktemp("app"))  # as mtsr label-server runs it
    studies = tmp_path_factory.mktemp("studies")
    _study(studies)
    sheared = AFFINE.copy()
    sheared[0, 1] = np.tan(np.radians(6))  # 6 degrees of shear: no qform can hold it
    write_nifti(studies / "shear_t1.nii.gz", nib.load(str(studies / "case_t1.nii.gz")).get_fdata(), sheared)
    if HEAD_T1.is_file():
        (studies / "head_t1.nii.gz").write_bytes(HEAD_T1.read_bytes())
    port = _free_port()
    log = studies.parent / "label_server.log"
    command = [str(LABEL_PYTHON), "-m", "monailabel.main", "start_server", "--app", str(app)]
    command += [
        "--studies",
        str(studies),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--conf",
        "models",
        "all",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=studies.parent)
    try:
        info = _wait_for(f"http://127.0.0.1:{port}/info/", proc, log)
        yield {
            "url": f"http://127.0.0.1:{port}",
            "info": info,
            "studies": studies,
            "out": studies.parent,
            "app": app,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _infer(server: dict, model: str, image: str, params: dict | None = None) -> nib.Nifti1Image:
    query = urllib.parse.urlencode({"image": image, "output": "image"})
    body = urllib.parse.urlencode({"params": json.dumps(params or {})}).encode()
    request = urllib.request.Request(f"{server['url']}/infer/{model}?{query}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=900) as response:
        data = response.read()
    path = server["out"] / f"{model}_{len(params or {})}.nii.gz"
    path.write_bytes(data)
    return nib.load(str(path))


def test_info_lists_three_image_to_image_models(server):
    models = server["info"]["models"]
    assert set(models) == {"mtsr_sr", "mtsr_mt", "clinical_sr"}
    assert all(m["type"] == "others" and m["dimension"] == 3 for m in models.values())
    assert {"seed", "mean", "brain_mask"} <= set(models["mtsr_mt"]["config"])


def test_the_server_writes_its_files_into_the_app_dir_and_nothing_into_the_package(server):
    from mtsr_monai.label import APP_DIR

    assert (server["app"] / "logs").is_dir()  # MONAI Label's log folder, beside the copied main.py
    assert {p.name for p in APP_DIR.iterdir()} <= {"__init__.py", "main.py", "__pycache__"}


def test_sr_returns_x4_in_plane_with_the_same_field_of_view(server):
    from mtsr_monai.inference.super_resolve import sr_affine

    lr = nib.load(str(server["studies"] / "case_t1.nii.gz"))
    sr = _infer(server, "mtsr_sr", "case_t1")
    assert sr.shape == (4 * lr.shape[0], 4 * lr.shape[1], lr.shape[2])
    np.testing.assert_allclose(sr.affine, sr_affine(lr.affine, [0, 1], 4), atol=1e-4)
    np.testing.assert_allclose(_outer_corners(sr), _outer_corners(lr), atol=1e-3)
    assert np.isfinite(sr.get_fdata()).all() and sr.get_fdata().max() > 0


def test_a_result_lies_in_the_space_its_input_header_names(server):
    lr = nib.load(str(server["studies"] / "case_t1.nii.gz"))
    sr = _infer(server, "mtsr_sr", "case_t1")
    assert lr.header["sform_code"] == 2  # nibabel's "aligned", as write_nifti leaves it
    assert (int(sr.header["sform_code"]), int(sr.header["qform_code"])) == (2, 2)


def test_a_result_of_a_sheared_scan_keeps_its_exact_affine_as_the_cli_writes_it(server):
    from mtsr_monai.inference.super_resolve import sr_affine

    lr = nib.load(str(server["studies"] / "shear_t1.nii.gz"))
    sr = _infer(server, "mtsr_sr", "shear_t1")
    np.testing.assert_allclose(sr.affine, sr_affine(lr.affine, [0, 1], 4), atol=1e-4)
    assert int(sr.header["qform_code"]) == 0  # a qform would hold a nearby rotation, mm off at the edges


def test_mt_sample_of_a_seed_is_the_cli_translation_on_the_input_grid(server):
    from mtsr_monai.inference.translate import (
        default_weights,
        latent_codes,
        load_translator,
        translate_volume,
        volume_settings,
    )

    lr = nib.load(str(server["studies"] / "case_t1.nii.gz"))
    out = _infer(server, "mtsr_mt", "case_t1", {"seed": 3})
    assert out.shape == lr.shape
    np.testing.assert_allclose(out.affine, lr.affine, atol=1e-4)
    generator, meta = load_translator(default_weights("t1", "flair"))
    codes = latent_codes(1, int(meta["nz"]), 3)
    volume = lr.get_fdata(dtype=np.float32)
    expected = translate_volume(
        volume, lr.affine, generator, int(meta["image_size"]), codes, **volume_settings(meta)
    )
    np.testing.assert_allclose(out.get_fdata(), expected[0], atol=1e-4)
    mean = _infer(server, "mtsr_mt", "case_t1", {"mean": True, "samples": 2})
    assert mean.shape == lr.shape and not np.allclose(mean.get_fdata(), out.get_fdata())


@pytest.mark.real_data  # reads ../shared/data by path
def test_mt_translates_a_head_with_its_skull_inside_a_brain_mask(server):
    from scipy import ndimage

    from mtsr_monai.transforms.foreground import head_mask

    if not (server["studies"] / "head_t1.nii.gz").is_file():
        pytest.skip(f"real data not found at {HEAD_T1}; skipping real-data test")
    head = head_mask(nib.load(str(server["studies"] / "head_t1.nii.gz")).get_fdata())
    head = np.stack([ndimage.binary_fill_holes(head[..., k]) for k in range(head.shape[2])], -1)
    middle = slice(head.shape[2] // 3, 2 * head.shape[2] // 3)
    scalp = (head & ~ndimage.binary_erosion(head, np.ones((3, 3, 1)), 4))[..., middle]  # outer 3.6 mm

    def scalp_painted(params: dict) -> float:
        out = _infer(server, "mtsr_mt", "head_t1", params).get_fdata()
        return float((out[..., middle][scalp] > 0).mean())

    # measured: 0.03 of the scalp painted with the automatic mask, 1.00 without it
    assert scalp_painted({"brain_mask": "auto"}) < 0.1
    assert scalp_painted({"brain_mask": "none"}) > 0.5


def test_clinical_sr_restores_flair_with_its_study_on_a_1mm_grid_over_its_field_of_view(server):
    flair = nib.load(str(server["studies"] / "case_flair.nii.gz"))
    out = _infer(server, "clinical_sr", "case_flair")
    assert out.shape == (24, 28, 16)  # 24 x 28 x (4 slices x 4 mm) at 1 mm
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3], axis=0), [1.0, 1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(_outer_corners(out), _outer_corners(flair), atol=1e-3)
    alone = _infer(server, "clinical_sr", "case_flair", {"other_sequences": False})
    assert alone.shape == out.shape and not np.allclose(alone.get_fdata(), out.get_fdata())


def test_clinical_sr_of_a_t1_overlays_that_t1_though_its_study_has_a_flair_on_another_grid(server):
    t1 = nib.load(str(server["studies"] / "pair_t1.nii.gz"))
    out = _infer(server, "clinical_sr", "pair_t1")
    np.testing.assert_allclose(_outer_corners(out), _outer_corners(t1), atol=1e-3)  # not the FLAIR's
    assert out.shape == (20, 24, 15)


@pytest.mark.parametrize(
    "model, image, params, reason",
    [
        ("clinical_sr", "case_flair", {"spacing": 0}, "spacing must be 0.25 to 5"),
        ("clinical_sr", "case_flair", {"sequence": "pd"}, "option sequence must be"),
        ("mtsr_mt", "case_t1", {"seed": -1}, "seed must be 0 to 2**32 - 1"),
        ("clinical_sr", "case_t1", {"sequence": "flair"}, "name says t1, the option sequence says flair"),
        ("mtsr_mt", "case_t1", {"seed": "abc"}, "option seed: 'abc' is not a valid value"),
        ("mtsr_mt", "case_flair", {}, "this image's name says flair"),
        ("mtsr_sr", "nope", {}, "no such image in the studies folder"),
        ("nosuchmodel", "case_t1", {}, "no model 'nosuchmodel'"),  # was a bare 500
    ],
)
def test_a_bad_request_is_answered_400_with_its_reason(server, model, image, params, reason):
    with pytest.raises(urllib.error.HTTPError) as err:
        _infer(server, model, image, params)
    assert err.value.code == 400 and reason in err.value.read().decode()


def _upload(server: dict, model: str, scan: Path, params: dict) -> int:
    """POST ``scan`` as an upload (no studies image), the status code of the answer."""
    boundary, content = "mtsr-upload-boundary", scan.read_bytes()
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{json.dumps(params)}\r\n'
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{scan.name}"\r\n\r\n'
    body = head.encode() + part.encode() + content + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    url = f"{server['url']}/infer/{model}?image=&output=image"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=900) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_a_refused_upload_leaves_no_copy_in_the_temporary_folder(server):
    import glob
    import tempfile

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "tmp*")))
    assert _upload(server, "mtsr_mt", server["studies"] / "case_t1.nii.gz", {"seed": -5}) == 400
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "tmp*"))) <= before


def test_study_sequences_are_found_whatever_the_format_and_wherever_the_sequence_token_stands(tmp_path):
    if not LABEL_PYTHON.is_file():
        pytest.skip(f"no MONAI Label environment at {LABEL_PYTHON}")
    for name in ("p1_FLAIR_ax.nrrd", "p1_T1_ax.nrrd", "p1_T2_ax.nii.gz", "p2_T1_ax.nrrd", "p1_ax.nrrd"):
        (tmp_path / name).touch()
    code = "import json, sys; from mtsr_monai.label.tasks import study_sequences as s; "
    code += "print(json.dumps(s(sys.argv[1])))"
    found = subprocess.run(
        [str(LABEL_PYTHON), "-c", code, str(tmp_path / "p1_FLAIR_ax.nrrd")], capture_output=True, text=True
    )
    names = {k: Path(v).name for k, v in json.loads(found.stdout.strip().splitlines()[-1]).items()}
    assert names == {"flair": "p1_FLAIR_ax.nrrd", "t1": "p1_T1_ax.nrrd", "t2": "p1_T2_ax.nii.gz"}
