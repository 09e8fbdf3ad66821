"""One rule finds the bundles (checkout and wheel alike), and every shipped file is checked by its sha256."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from mtsr_monai.errors import InputError
from mtsr_monai.inference.bundle import (
    BUNDLE_NAMES,
    bundle_file,
    bundles_root,
    declared_files,
    verify_file,
)
from tests.conftest import REPO


def _fake_bundle(root: Path, content: bytes, declared: bytes) -> Path:
    bundle = root / "mtsr_mt"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "models" / "t1_to_flair.pt").write_bytes(content)
    digest = hashlib.sha256(declared).hexdigest()
    (bundle / "large_files.yml").write_text(
        f"large_files:\n  - path: models/t1_to_flair.pt\n    url: ''\n    hash_val: {digest}\n"
        "    hash_type: sha256\n"
    )
    return bundle


def test_checkout_finds_the_repository_bundles_through_the_package():
    assert (REPO / "mtsr_monai" / "bundles").resolve() == (REPO / "bundles").resolve()
    assert bundles_root() == (REPO / "bundles").resolve()


def test_mtsr_bundles_moves_every_default_weights_path(tmp_path, monkeypatch):
    from mtsr_monai.inference.bundle import sr_weights_path
    from mtsr_monai.inference.clinical import default_model_path
    from mtsr_monai.inference.translate import default_weights

    monkeypatch.setenv("MTSR_BUNDLES", str(tmp_path))
    monkeypatch.delenv("MTSR_SR_WEIGHTS", raising=False)
    assert default_weights("t1", "flair") == tmp_path / "mtsr_mt" / "models" / "t1_to_flair.pt"
    assert default_model_path() == tmp_path / "clinical_sr" / "models" / "model.pt"
    assert sr_weights_path() == tmp_path / "mtsr_sr" / "models" / "model.pt"


def test_a_file_differing_from_its_declared_sha256_is_refused(tmp_path, monkeypatch):
    _fake_bundle(tmp_path, b"changed weights", declared=b"original weights")
    monkeypatch.setenv("MTSR_BUNDLES", str(tmp_path))
    with pytest.raises(InputError, match="sha256"):
        bundle_file("models/t1_to_flair.pt", "mtsr_mt")
    from mtsr_monai.inference.translate import default_weights, load_translator

    with pytest.raises(InputError, match="sha256"):
        load_translator(default_weights("t1", "flair"))
    from mtsr_monai.inference.bundle import checkpoint_meta

    with pytest.raises(InputError, match="sha256"):  # the bundle config's metadata read checks too
        checkpoint_meta(default_weights("t1", "flair"))


def test_a_declared_file_that_is_a_link_is_checked_by_what_it_points_to(tmp_path):
    bundle = _fake_bundle(tmp_path / "b", b"original weights", declared=b"original weights")
    shipped = bundle / "models" / "t1_to_flair.pt"
    (tmp_path / "cache.pt").write_bytes(b"changed weights")  # an annex / DVC cache file outside the bundle
    shipped.unlink()
    shipped.symlink_to(tmp_path / "cache.pt")
    with pytest.raises(InputError, match="sha256"):
        verify_file(shipped)
    changed = _fake_bundle(tmp_path / "c", b"changed weights", declared=b"original weights")
    (tmp_path / "link.pt").symlink_to(changed / "models" / "t1_to_flair.pt")  # a link into a bundle
    with pytest.raises(InputError, match="sha256"):
        verify_file(tmp_path / "link.pt")


def test_a_matching_or_undeclared_file_passes(tmp_path):
    bundle = _fake_bundle(tmp_path, b"weights", declared=b"weights")
    assert verify_file(bundle / "models" / "t1_to_flair.pt").name == "t1_to_flair.pt"
    (bundle / "runs").mkdir()
    shutil.copy(bundle / "large_files.yml", bundle / "runs" / "model.pt")
    assert verify_file(bundle / "runs" / "model.pt")  # a training output inside the bundle: not declared
    with pytest.raises(InputError, match="not found"):
        verify_file(bundle / "models" / "absent.pt")


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_shipped_files_match_their_declared_sha256(name):
    files = declared_files(bundles_root() / name)
    assert files, f"{name}/large_files.yml declares no sha256"
    for rel in files:
        verify_file(bundles_root() / name / rel)


def test_mtsr_bundles_prints_folders_and_refuses_a_changed_file(tmp_path, monkeypatch, capsys):
    from mtsr_monai.cli import main

    assert main(["bundles", "--path", "mtsr_mt"]) == 0
    assert capsys.readouterr().out.strip() == str(bundles_root() / "mtsr_mt")
    for name in BUNDLE_NAMES:
        (tmp_path / name / "configs").mkdir(parents=True)
    shutil.rmtree(tmp_path / "mtsr_mt")
    _fake_bundle(tmp_path, b"changed", declared=b"original")
    monkeypatch.setenv("MTSR_BUNDLES", str(tmp_path))
    assert main(["bundles"]) == 2
    assert "models/t1_to_flair.pt: weights do not match" in capsys.readouterr().out


def test_a_changed_tissue_lookup_table_is_refused(tmp_path, monkeypatch):
    from mtsr_monai.inference.tissue_lookup import load_tissue_lookup

    copy = tmp_path / "mtsr_mt"
    (copy / "models").mkdir(parents=True)
    shutil.copy(REPO / "bundles" / "mtsr_mt" / "large_files.yml", copy)
    shutil.copytree(REPO / "bundles" / "mtsr_mt" / "configs", copy / "configs")
    table = (REPO / "bundles" / "mtsr_mt" / "models" / "tissue_lookup.json").read_text()
    (copy / "models" / "tissue_lookup.json").write_text(table.replace("0.", "0.1", 1))
    monkeypatch.setenv("MTSR_BUNDLES", str(tmp_path))
    with pytest.raises(InputError, match="sha256"):
        load_tissue_lookup("t1", "flair")
