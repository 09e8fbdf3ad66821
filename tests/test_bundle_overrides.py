"""Every training script reads bundle overrides with one parser, and hands them to monai.bundle intact."""

from __future__ import annotations

import sys
from pathlib import Path

import fire.parser
import pytest

from mtsr_monai.errors import InputError
from mtsr_monai.inference.bundle import override_args, parse_overrides

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_sr  # noqa: E402


def test_flag_pairs_and_key_value_pairs_read_the_same_values():
    flags = ["--global_skip", "null", "--learning_rate", "5e-5", "--residual", "true", "--hr_patch=96"]
    pairs = ["global_skip=null", "learning_rate=5e-5", "residual=true", "hr_patch=96"]
    expected = {"global_skip": None, "learning_rate": 5e-5, "residual": True, "hr_patch": 96}
    assert parse_overrides(flags) == parse_overrides(pairs) == expected


def test_expressions_references_and_mappings_keep_their_meaning():
    tokens = ["--device", "$torch.device('cuda', 0)", "--net", "@generator", "--p", "{t1: 0.2}"]
    parsed = parse_overrides(tokens)
    assert parsed == {"device": "$torch.device('cuda', 0)", "net": "@generator", "p": {"t1": 0.2}}


@pytest.mark.parametrize("tokens", [["filters"], ["--filters"], ["--filters", "--residual", "true"], ["=3"]])
def test_a_token_that_is_no_override_is_refused(tokens):
    with pytest.raises(InputError):
        parse_overrides(tokens)


def test_override_arguments_read_back_through_monai_bundle_as_the_same_values():
    values = {"a": "bicubic", "b": None, "c": "true", "d": "5", "e": "t1,t2", "f": "$torch.device('cuda', 0)",
              "g": "/runs/a b", "h": 5e-5, "i": {"flair": 0.1}, "loss_weights#vgg": 0}  # fmt: skip
    words = override_args(values)
    read_back = {words[i][2:]: fire.parser.DefaultParseValue(words[i + 1]) for i in range(0, len(words), 2)}
    assert read_back == values
    assert parse_overrides(words) == values


def test_train_sr_passes_a_null_global_skip_as_none(monkeypatch, tmp_path):
    from mtsr_monai.inference import bundle

    calls = []
    monkeypatch.setattr(bundle, "run_training", lambda root, overrides: calls.append(overrides))
    argv = ["train", "--datalist", "d.json", "--run-dir", str(tmp_path), "--", "--global_skip", "null"]
    assert train_sr.main(argv) == 0
    (overrides,) = calls
    assert overrides["global_skip"] is None and overrides["output_dir"] == str(tmp_path)


def test_yaml_1_1_look_alikes_stay_text():
    assert parse_overrides(["--a", "on", "--b", "010", "--c", "1:30"]) == {"a": "on", "b": "010", "c": "1:30"}


def test_train_clinical_refuses_an_override_its_options_set_and_names_a_bad_datalist(tmp_path, capsys):
    import train_clinical

    assert train_clinical.main(["train", "--output-dir", str(tmp_path), "dataset_dir=/x"]) == 2
    assert "give --dataset-dir" in capsys.readouterr().err
    assert train_clinical.main(["train", "--output-dir", str(tmp_path), "datalist=/no/such.json"]) == 2
    assert "no such datalist" in capsys.readouterr().err.lower()
