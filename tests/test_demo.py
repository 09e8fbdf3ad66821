"""The embedded demo subject: signal equations, tissue contrasts, determinism and `mtsr make-demo-data`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtsr_monai.data import demo


def test_default_flair_inversion_time_nulls_csf_but_not_tissue():
    seqs = demo.resolve_sequences()
    flair = seqs["flair"]
    assert 2000 < flair.ti < 3000  # ~2.4 s at TR 9 s, 3 T
    assert demo.tissue_signal(demo.TISSUES["csf"], flair) == pytest.approx(0.0, abs=1e-9)
    assert demo.tissue_signal(demo.TISSUES["wm"], flair) > 0.05


def test_spin_echo_and_inversion_recovery_equations():
    t = demo.Tissue(pd=0.8, t1=1000.0, t2=100.0)
    assert demo.spin_echo(t, tr=1000, te=100) == pytest.approx(0.8 * (1 - np.exp(-1)) * np.exp(-1))
    assert demo.inversion_recovery(t, tr=1e9, te=0, ti=1000 * np.log(2)) == pytest.approx(0.0, abs=1e-12)
    assert demo.inversion_recovery(t, tr=1e9, te=0, ti=0) == pytest.approx(0.8)  # |1 - 2| at TI = 0


def test_sequence_overrides_and_their_refusals():
    seqs = demo.resolve_sequences(tr_t2=6000, te_t2=80, ti_flair=2500)
    assert (seqs["t2"].tr, seqs["t2"].te, seqs["flair"].ti) == (6000, 80, 2500)
    assert seqs["t1"] == demo.SEQUENCES["t1"]
    for bad in ({"ti_t1": 100}, {"tr_t7": 100}, {"te_pd": -1}, {"te_t1": 600}):
        with pytest.raises(ValueError):
            demo.resolve_sequences(**bad)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    from mtsr_monai.cli import main

    out = tmp_path_factory.mktemp("demo") / "subject"
    assert main(["make-demo-data", "--output", str(out)]) == 0
    return out


def _read(path: Path):
    import nibabel as nib

    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine, image.get_data_dtype()


def test_make_demo_data_writes_five_files_on_the_template_grid(demo_dir):
    import nibabel as nib

    from mtsr_monai.io.template import template_path

    names = sorted(p.name for p in demo_dir.iterdir() if not p.name.startswith("."))
    assert names == ["brain_mask.nii.gz", "flair.nii.gz", "pd.nii.gz", "t1.nii.gz", "t2.nii.gz"]
    template = nib.load(str(template_path("t1")))
    for name in names:
        data, affine, dtype = _read(demo_dir / name)
        assert data.shape == template.shape
        np.testing.assert_allclose(affine, template.affine)
        assert dtype == (np.uint8 if name.startswith("brain_mask") else np.float32)
    mask = _read(demo_dir / "brain_mask.nii.gz")[0]
    assert set(np.unique(mask)) == {0, 1} and 1.2e6 < mask.sum() < 2.5e6  # an adult brain is ~1.2-1.8 l


def test_demo_contrasts_order_tissues_as_real_scans_do(demo_dir):
    fractions, _, _ = demo.tissue_fractions()
    pure = {name: fractions[name] > 0.9 for name in ("gm", "wm", "csf")}
    med = {
        c: {t: float(np.median(_read(demo_dir / f"{c}.nii.gz")[0][m])) for t, m in pure.items()}
        for c in demo.CONTRASTS
    }
    assert med["t1"]["wm"] > med["t1"]["gm"] > med["t1"]["csf"]  # T1w: CSF dark, WM brightest
    assert med["t2"]["csf"] > med["t2"]["gm"] > med["t2"]["wm"]  # T2w: CSF bright, WM darkest
    assert med["flair"]["csf"] < 0.1 * med["flair"]["wm"]  # FLAIR: CSF nulled
    assert med["flair"]["gm"] > med["flair"]["wm"]
    assert med["pd"]["gm"] > med["pd"]["wm"]  # PD follows water content


def test_demo_subject_is_deterministic(demo_dir):
    images, mask, _ = demo.synthesize_contrasts(("t1", "flair"))
    for name in ("t1", "flair"):
        assert images[name].tobytes() == _read(demo_dir / f"{name}.nii.gz")[0].tobytes()
    assert mask.tobytes() == _read(demo_dir / "brain_mask.nii.gz")[0].tobytes()


def test_make_demo_data_refuses_bad_times_with_exit_2_and_writes_nothing(tmp_path, capsys):
    from mtsr_monai.cli import main

    out = tmp_path / "subject"
    assert main(["make-demo-data", "--output", str(out), "--te-flair", "20000"]) == 2
    assert main(["make-demo-data", "--output", str(out), "--tr-t1", "-5"]) == 2
    assert not out.exists()
    assert "error" in capsys.readouterr().err


def test_an_interrupted_demo_subject_leaves_no_file(tmp_path, monkeypatch):
    import pytest

    from mtsr_monai.data import demo

    written, save = [], demo.save_volume

    def save_then_interrupt(array, path, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third volume is written
        written.append(save(array, path, **kwargs))
        return path

    monkeypatch.setattr(demo, "save_volume", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        demo.make_demo_subject(tmp_path / "demo")
    assert len(written) == 2 and list((tmp_path / "demo").rglob("*.nii.gz")) == []
