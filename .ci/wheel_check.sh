#!/usr/bin/env bash
# The wheel alone, outside the checkout: `pip wheel . --no-deps` (code, bundle configs, docs and weights as
# package data), a fresh venv in a temporary folder, the package installed from the wheel only, then the main
# commands run there: mtsr demo, and super-resolve, translate and clinical-sr on the demo's outputs.
# Dependencies: the fresh venv sees the CI venv's site-packages through a .pth file (torch and its CUDA
# libraries are ~5 GB; reinstalling them would double CI time). mtsr_monai and its bundles come from the wheel:
# the check below fails if they would be found in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ci_python="$PWD/.venv/bin/python"  # not resolved: the link is what makes it the CI venv
work=$(mktemp -d "${TMPDIR:-/tmp}/mtsr-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel . --no-deps -q -w "$work/dist"
wheel=$(ls "$work"/dist/mtsr_monai-*.whl)
echo "wheel: $(basename "$wheel") ($(du -m "$wheel" | cut -f1) MB)"
"$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv "$work/venv"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$ci_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/ci_dependencies.pth"
"$work/venv/bin/python" -m pip install -q --no-deps "$wheel"
# the CI venv's current pip shows the fresh venv's install (the venv's bundled pip may predate PEP 639 and
# print an empty License for a licence expression)
"$ci_python" -m pip --python "$work/venv/bin/python" show --verbose mtsr-monai
# pip show's fields come from the wheel's metadata: licence, authors, URLs and classifiers must be filled in
"$work/venv/bin/python" - <<'PY'
from importlib.metadata import metadata

meta = metadata("mtsr-monai")
missing = [f for f in ("License-Expression", "Author", "Project-URL", "Classifier") if not meta.get_all(f)]
assert not missing, f"empty package metadata: {missing}"
print("metadata: licence", meta["License-Expression"], "|", len(meta.get_all("Project-URL")), "URLs |",
      len(meta.get_all("Classifier")), "classifiers | author", meta["Author"])
PY
cd "$work"
unset MTSR_BUNDLES MTSR_SR_WEIGHTS
venv/bin/python - <<'PY'
import sys
from pathlib import Path

import mtsr_monai
from mtsr_monai.inference.bundle import BUNDLE_NAMES, bundles_root, declared_files, verify_file

prefix = Path(sys.prefix).resolve()
assert prefix in Path(mtsr_monai.__file__).resolve().parents, f"mtsr_monai imported from {mtsr_monai.__file__}"
assert prefix in bundles_root().parents, f"bundles found at {bundles_root()}, not in the wheel's install"
for name in BUNDLE_NAMES:
    for rel in declared_files(bundles_root() / name):
        verify_file(bundles_root() / name / rel)
print(f"wheel install: package and bundles under {prefix}, declared weights match their sha256")
PY
venv/bin/mtsr demo --output-dir demo
venv/bin/mtsr super-resolve --input demo/lr_t1.nii.gz --output sr_t1.nii.gz
venv/bin/mtsr translate --input demo/run/sr.nii.gz --source t1 --target flair --samples 2 --output-dir translate
venv/bin/mtsr clinical-sr --t1 demo/lr_t1.nii.gz --spacing 2 --output-dir clinical
echo "wheel check passed"
