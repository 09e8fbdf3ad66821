"""Exporting trained weights into a bundle: weights the bundle's inference cannot use are refused before
the bundle is touched, and the new file's sha256 is declared so the bundle's check accepts it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from mtsr_monai.errors import InputError
from mtsr_monai.inference.bundle import declare_weights, sha256, verify_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import train_sr  # noqa: E402


def test_declaring_one_file_keeps_the_other_entries_and_the_check_accepts_it(tmp_path):
    (tmp_path / "models").mkdir()
    for name in ("a.pt", "b.pt"):
        (tmp_path / "models" / name).write_bytes(b"old")
        declare_weights(tmp_path, f"models/{name}")
    (tmp_path / "models" / "a.pt").write_bytes(b"retrained")
    with pytest.raises(InputError, match="do not match the sha256"):
        verify_file(tmp_path / "models" / "a.pt")
    declare_weights(tmp_path, "models/a.pt")
    text = (tmp_path / "large_files.yml").read_text()
    assert text.count("- path:") == 2 and sha256(tmp_path / "models" / "b.pt") in text
    assert verify_file(tmp_path / "models" / "a.pt")


@pytest.fixture
def sr_bundle(tmp_path, monkeypatch) -> Path:
    bundle = tmp_path / "mtsr_sr"
    shutil.copytree(REPO / "bundles" / "mtsr_sr", bundle)
    monkeypatch.setattr(train_sr, "BUNDLE", bundle)
    return bundle


def _export(bundle: Path, checkpoint: Path) -> int:
    target = bundle / "models" / "model.pt"
    return train_sr.main(["export", "--checkpoint", str(checkpoint), "--out", str(target)])


@pytest.mark.parametrize("recipe", [{"global_skip": "bicubic"}, None])
def test_sr_export_refuses_weights_the_bundle_would_misuse_before_touching_it(sr_bundle, tmp_path, recipe):
    run = tmp_path / "run"
    run.mkdir()
    if recipe is None:  # weights of another network
        torch.save(torch.nn.Linear(2, 2).state_dict(), run / "model.pt")
    else:  # the right network, trained with a global skip that inference.yaml does not declare
        shutil.copy(sr_bundle / "models" / "model.pt", run / "model.pt")
        (run / "recipe.json").write_text(json.dumps(recipe))
    files = (sr_bundle / "large_files.yml", sr_bundle / "models" / "model.pt")
    before = [p.read_bytes() for p in files]
    assert _export(sr_bundle, run / "model.pt") == 2
    assert [p.read_bytes() for p in files] == before


def test_sr_export_of_fitting_weights_is_declared_and_loads(sr_bundle, tmp_path):
    from mtsr_monai.inference.bundle import load_bundle_network

    run = tmp_path / "run"
    run.mkdir()
    state = torch.load(sr_bundle / "models" / "model.pt", weights_only=True)
    torch.save({k: v.float() * 1.01 for k, v in state.items()}, run / "model.pt")
    (run / "recipe.json").write_text(json.dumps({"global_skip": None}))
    assert _export(sr_bundle, run / "model.pt") == 0
    network, info = load_bundle_network(sr_bundle)  # its sha256 is checked on the way
    assert info["weights"] == str(sr_bundle / "models" / "model.pt")


def test_sr_export_elsewhere_refuses_a_file_that_is_no_generator_of_the_bundle(tmp_path, capsys):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "other.pt")
    (tmp_path / "list.json").write_text("{}")
    for source in ("other.pt", "list.json"):
        out = tmp_path / "exported.pt"
        assert train_sr.main(["export", "--checkpoint", str(tmp_path / source), "--out", str(out)]) == 2
        assert not out.exists()


def _damaged_weights(path: Path) -> Path:
    torch.save({"model": torch.nn.Linear(64, 64).state_dict(), "meta": {}}, path)
    path.write_bytes(path.read_bytes()[:3000])  # a copy cut short
    return path


def test_mt_export_refuses_a_damaged_best_generator_naming_it(tmp_path):
    import train_mt

    best = _damaged_weights(tmp_path / "best.pt")
    (tmp_path / "list.json").write_text("{}")
    with pytest.raises(InputError, match="cannot read weights") as refused:
        train_mt.export(best, tmp_path / "out.pt", tmp_path / "list.json", [])
    assert refused.value.path == str(best) and not (tmp_path / "out.pt").exists()


def test_a_clinical_best_model_that_cannot_be_read_is_refused_naming_it(tmp_path):
    from mtsr_monai.inference.clinical import generator_state

    with pytest.raises(InputError, match="cannot read weights"):
        generator_state(_damaged_weights(tmp_path / "model_best.pt"))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(InputError, match="holds no state dict"):
        generator_state(tmp_path / "list.pt")
