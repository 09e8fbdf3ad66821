"""Interpolation baselines of `mtsr super-resolve` skip `import monai` (~8 s); same output as the bundle."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np

from tests.conftest import REPO, write_nifti

_NO_MONAI = """
import sys
from mtsr_monai.cli import main
code = main(["super-resolve", "--input", sys.argv[1], "--output", sys.argv[2], "--method", "bicubic"])
assert code == 0, code
loaded = sorted(m for m in sys.modules if m == "monai" or m.startswith("monai."))
assert not loaded, loaded[:5]
"""


def test_bicubic_super_resolve_does_not_import_monai(tmp_path, phantom):
    lr = write_nifti(tmp_path / "lr.nii.gz", phantom, np.diag([4.0, 4.0, 2.0, 1.0]))
    out = tmp_path / "sr.nii.gz"
    run = subprocess.run(
        [sys.executable, "-c", _NO_MONAI, str(lr), str(out)], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert nib.load(out).shape == (128, 128, 16)


def test_bicubic_without_monai_equals_the_bundle_path(tmp_path, phantom):
    from mtsr_monai.inference.super_resolve import super_resolve_file

    c, s = 4 * np.cos(0.5), 4 * np.sin(0.5)
    affine = np.array([[-c, s, 0, 30], [-s, -c, 0, 60], [0, 0, 2.0, -10], [0, 0, 0, 1]])  # oblique, LPS-like
    lr = write_nifti(tmp_path / "lr.nii.gz", phantom * 300, affine)
    light, bundle = tmp_path / "light.nii.gz", tmp_path / "bundle.nii.gz"
    super_resolve_file(str(lr), str(light), method="bicubic", progress=False)
    super_resolve_file(str(lr), str(bundle), method="bicubic", bundle="mtsr_sr", progress=False)
    a, b = nib.load(light), nib.load(bundle)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine)
    assert a.get_data_dtype() == b.get_data_dtype()
    for code in ("sform_code", "qform_code"):
        assert a.header[code] == b.header[code]
