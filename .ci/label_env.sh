#!/usr/bin/env bash
# MONAI Label 0.8.5's environment (.venv-label), for tests/test_label_app.py. It pins numpy < 2, pydicom < 3,
# pynetdicom < 3, dicomweb-client < 0.60, so it cannot share .venv. Its dependency sam2 is a source package whose
# build imports torch: built against this environment's torch (no isolated copy), without its CUDA extension.
# Usage: bash .ci/label_env.sh STATUS_FILE  (STATUS_FILE gets the exit status when done, whatever it is: .ci/run
# builds this in the background and the label test waits for the file)
set -euo pipefail
status_file=${1:?usage: label_env.sh STATUS_FILE}
# written whole, then renamed: the waiting test must never read a half-written status
trap 'echo $? > "$status_file.partial" && mv "$status_file.partial" "$status_file"' EXIT
cd "$(dirname "$0")/.."
if [ ! -x .venv-label/bin/python ]; then
    python3 -m venv .venv-label
fi
.venv-label/bin/python -m pip install -q --upgrade pip "setuptools>=77" wheel
# .venv's torch stack, ITK and SimpleITK, hard-linked rather than installed twice (a second copy once filled a CI disk)
.venv/bin/python .ci/share_torch.py "$(.venv-label/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
.venv-label/bin/python -m pip install -q -c .ci/constraints.txt torch torchvision "numpy<2"
SAM2_BUILD_CUDA=0 .venv-label/bin/python -m pip install -q --no-build-isolation -c .ci/constraints.txt -e ".[label]"
