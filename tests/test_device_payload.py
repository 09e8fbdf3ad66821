"""The GPU-run pieces, cheaply: payload packing (split, crop, affine, space), the SimpleITK-free resampling,
the override files merged into the bundles' configs, the wall-clock stop, the return limits and the wrapper's
argument checks. The run itself is rehearsed by hand on a CPU (docs/sr.md, "Training on a GPU")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import device_train  # noqa: E402
import device_weights  # noqa: E402
import pack_device_payload as pack  # noqa: E402
import shared_splits  # noqa: E402

from tests.conftest import write_nifti  # noqa: E402


def _brats_root(tmp_path: Path, subjects: list[str], contrasts=("t1", "t2", "flair")) -> Path:
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    affine = np.array([[-1.0, 0, 0, 90], [0, -1.0, 0, 120], [0, 0, 1.0, -70], [0, 0, 0, 1]])
    for sid in subjects:
        folder = root / "brats2018_tcia" / sid
        folder.mkdir(parents=True)
        vol = np.zeros((24, 20, 16), np.int16)
        vol[4:20, 3:17, 2:14] = rng.integers(50, 900, size=(16, 14, 12))
        for c in contrasts:
            write_nifti(folder / f"{sid}_{c}.nii.gz", vol, affine)
    return root


def test_priority_never_names_a_held_out_subject():
    assert not set(pack.PRIORITY) & set(shared_splits.HELD_OUT)
    assert {shared_splits.split_of(s) for s in pack.PRIORITY} <= {"training", "validation"}


def test_pack_keeps_training_and_validation_only_with_geometry(tmp_path):
    import nibabel as nib

    held_out, val, train = "Brats18_TCIA10_637_1", "Brats18_TCIA10_628_1", "Brats18_TCIA01_201_1"
    root = _brats_root(tmp_path, [held_out, val, train])
    manifest = pack.pack_data(tmp_path / "out", 10 * pack.MIB, slab=8, val_slab=4, levels=0, root=root)
    listing = json.loads((tmp_path / "out" / "subjects.json").read_text())
    assert [e["subject"] for e in listing["training"]] == [train]
    assert [e["subject"] for e in listing["validation"]] == [val]
    assert not list((tmp_path / "out").glob(f"{held_out}*"))
    assert manifest["held_out_never_included"] == list(shared_splits.HELD_OUT)
    src = nib.load(root / "brats2018_tcia" / train / f"{train}_t1.nii.gz")
    out = nib.load(tmp_path / "out" / listing["training"][0]["t1"])
    box = manifest["kept"]["training"][0]["_box"]
    assert out.shape == (16, 14, 8) and out.get_data_dtype() == np.int16
    # the crop's first voxel sits where it was, and the values are exact with levels=0
    corner = src.affine @ np.array([box[0][0], box[1][0], box[2][0], 1.0])
    np.testing.assert_allclose(out.affine[:, 3], corner)
    np.testing.assert_array_equal(
        np.asarray(out.dataobj), np.asarray(src.dataobj)[tuple(slice(*b) for b in box)]
    )
    assert nib.load(tmp_path / "out" / listing["validation"][0]["t1"]).shape[2] == 4


def test_spread_full_plane_slabs_keep_whole_slices_across_the_brain_with_geometry(tmp_path):
    import nibabel as nib

    train = "Brats18_TCIA01_201_1"
    root = _brats_root(tmp_path, [train])  # 24 x 20 x 16 grid, brain in z 2..13
    layout = {"spread": True, "full_plane": True}
    manifest = pack.pack_data(tmp_path / "out", 10 * pack.MIB, 4, 4, levels=0, root=root, layout=layout)
    entry = manifest["kept"]["training"][0]
    assert entry["_box"] == [[0, 24, 1], [0, 20, 1], [2, 14, 3]]  # slices 2, 5, 8, 11 of the brain's 12
    src = nib.load(root / "brats2018_tcia" / train / f"{train}_t1.nii.gz")
    out = nib.load(tmp_path / "out" / entry["t1"])
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(src.dataobj)[:, :, 2:14:3])
    np.testing.assert_allclose(out.affine @ [5, 7, 2, 1], src.affine @ [5, 7, 8, 1])  # voxel k=2 is slice 8


def test_pack_drops_what_does_not_fit(tmp_path):
    root = _brats_root(tmp_path, ["Brats18_TCIA10_628_1", "Brats18_TCIA01_201_1"])
    manifest = pack.pack_data(tmp_path / "out", 1, slab=8, val_slab=4, levels=0, root=root)
    assert manifest["data_bytes"] == 0
    assert {d["subject"] for d in manifest["dropped"] if d["why"].startswith("no space")} == {
        "Brats18_TCIA10_628_1",
        "Brats18_TCIA01_201_1",
    }


def test_mt_pairs_travel_first_and_whole_for_the_mt_jobs_only(tmp_path):
    root = _brats_root(tmp_path, ["Brats18_TCIA01_201_1"])
    ms = _brats_root(tmp_path / "ms", ["open_ms_p1"], contrasts=("t1", "flair"))
    pair = {c: str(ms / "brats2018_tcia" / "open_ms_p1" / f"open_ms_p1_{c}.nii.gz") for c in ("t1", "flair")}
    out = tmp_path / "payload" / "data"
    manifest = pack.pack_data(out, 10 * pack.MIB, 8, 4, 0, root, mt_pairs=[{"subject": "ms", **pair}])
    assert [e["subject"] for e in manifest["kept"]["mt_training"]] == ["ms"]
    assert manifest["kept"]["mt_training"][0]["_box"][2] == [0, 16, 1]  # whole: all 16 slices
    paths = device_train.write_datalists(out.parent, tmp_path / "work", None)
    mt = json.loads(paths["subjects"].read_text())["training"]
    assert [s["subject"] for s in mt] == ["Brats18_TCIA01_201_1", "ms"]
    assert Path(mt[1]["flair"]).is_file() and "t2" not in mt[1]
    sr = json.loads(paths["volumes"].read_text())["training"]
    assert {v["subject"] for v in sr} == {"Brats18_TCIA01_201_1"}


@pytest.mark.parametrize("only, exists", [("sr", True), ("mt_t1_flair", False)])
def test_mt_pairs_are_refused_where_no_mt_job_runs_or_the_file_is_missing(tmp_path, only, exists):
    pairs = tmp_path / "pairs.json"
    if exists:
        pairs.write_text("[]")
    with pytest.raises(SystemExit) as stop:
        pack.main(["--slim", "--only", only, "--mt-pairs", str(pairs)])
    assert stop.value.code == 2


def test_quantize_keeps_levels_and_int16():
    arr = np.linspace(0, 4000, 1000).reshape(10, 10, 10)
    q, step = pack.quantize(arr, 256)
    assert q.dtype == np.int16 and step == 8.0  # p99.5 ~ 3980 / 256 -> 15.5 -> power of two below
    assert np.abs(q * step - arr).max() <= step / 2
    exact, one = pack.quantize(np.round(arr), 0)
    assert one == 1.0 and np.array_equal(exact, np.round(arr))


def test_8bit_weights_round_trip_with_structure_meta_and_values_kept(tmp_path):
    import torch

    torch.manual_seed(0)
    conv = (torch.randn(8, 4, 3, 3) * torch.linspace(0.01, 2.0, 8)[:, None, None, None]).half()
    original = {"generator": {"conv.weight": conv, "conv.bias": torch.randn(8).half()}, "meta": {"nz": 8}}
    (tmp_path / "bundles" / "b" / "models").mkdir(parents=True)
    torch.save(original, tmp_path / "bundles" / "b" / "models" / "w.pt")
    device_weights.pack(tmp_path / "init", ["bundles/b/models/w.pt"], tmp_path)
    (tmp_path / "bundles" / "b" / "models" / "w.pt").unlink()
    device_weights.unpack(tmp_path / "init", tmp_path)
    restored = torch.load(tmp_path / "bundles" / "b" / "models" / "w.pt", weights_only=True)
    assert restored["meta"] == {"nz": 8} and restored["generator"]["conv.weight"].dtype == torch.float16
    assert torch.equal(restored["generator"]["conv.bias"], original["generator"]["conv.bias"])
    error = (restored["generator"]["conv.weight"].float() - conv.float()).abs().amax(dim=(1, 2, 3))
    assert torch.all(error <= conv.float().abs().amax(dim=(1, 2, 3)) / 254 + 1e-3)  # half a step per channel
    assert device_weights.unpack(tmp_path / "init", tmp_path) == []  # an existing file is never replaced


def test_16bit_start_weights_travel_exactly(tmp_path):
    import torch

    original = {"conv.weight": torch.randn(8, 4, 3, 3).half(), "conv.bias": torch.randn(8).half()}
    (tmp_path / "bundles" / "b" / "models").mkdir(parents=True)
    torch.save(original, tmp_path / "bundles" / "b" / "models" / "w.pt")
    device_weights.pack(tmp_path / "init", ["bundles/b/models/w.pt"], tmp_path, bits=16)
    (tmp_path / "bundles" / "b" / "models" / "w.pt").unlink()
    device_weights.unpack(tmp_path / "init", tmp_path)
    restored = torch.load(tmp_path / "bundles" / "b" / "models" / "w.pt", weights_only=True)
    assert all(torch.equal(restored[k], original[k]) for k in original)
    with pytest.raises(ValueError, match="bits"):
        device_weights.pack(tmp_path / "init", ["bundles/b/models/w.pt"], tmp_path, bits=4)


def test_slim_tree_leaves_the_shipped_weights_behind_and_sizes_their_8bit_copies(tmp_path, monkeypatch):
    monkeypatch.setattr(device_train, "START_WEIGHTS", {"sr": "bundles/mtsr_sr/models/model.pt"})
    files = {"bundles/mtsr_sr/models/model.pt": 18 << 20, "bundles/mtsr_sr/configs/train.yaml": 1000}
    kept, init_bytes = pack.slim_tree(files, tmp_path)
    assert kept == {"bundles/mtsr_sr/configs/train.yaml": 1000}
    assert 0 < init_bytes < (REPO / "bundles/mtsr_sr/models/model.pt").stat().st_size * 0.6
    assert [p.name for p in (tmp_path / "init").iterdir()] == ["bundles__mtsr_sr__models__model.pt"]


def test_slim_tree_for_chosen_jobs_packs_only_their_start_weights(tmp_path, monkeypatch):
    starts = {"sr": "bundles/mtsr_sr/models/model.pt", "clinical": "no/such/weights.pt"}
    monkeypatch.setattr(device_train, "START_WEIGHTS", starts)
    pack.slim_tree({}, tmp_path, ["sr"])  # the clinical file, absent, is never read
    assert [p.name for p in (tmp_path / "init").iterdir()] == ["bundles__mtsr_sr__models__model.pt"]
    with pytest.raises(SystemExit, match="unknown job"):
        pack.slim_tree({}, tmp_path, ["srr"])


def test_a_start_file_travels_in_place_of_the_shipped_weights(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(device_train, "START_WEIGHTS", {"sr": "bundles/mtsr_sr/models/model.pt"})
    returned = {"conv.weight": torch.randn(4, 2, 3, 3).half()}
    torch.save(returned, tmp_path / "returned.pt")
    pack.slim_tree({}, tmp_path, ["sr"], 16, {"sr": tmp_path / "returned.pt"})
    record = torch.load(tmp_path / "init" / "bundles__mtsr_sr__models__model.pt", weights_only=True)
    assert record["path"] == "bundles/mtsr_sr/models/model.pt"  # unpacked where the job reads its start
    assert torch.equal(record["content"]["conv.weight"], returned["conv.weight"])


def test_jobs_sharing_a_start_file_cannot_start_from_two(tmp_path, monkeypatch):
    shared = "bundles/mtsr_sr/models/model.pt"
    monkeypatch.setattr(device_train, "START_WEIGHTS", {"sr": shared, "sr_b": shared})
    with pytest.raises(SystemExit, match="one file"):
        pack.slim_tree({}, tmp_path, ["sr", "sr_b"], 16, {"sr": tmp_path / "a.pt", "sr_b": tmp_path / "b.pt"})


@pytest.mark.parametrize(
    "argv",
    [
        ["--start", "sr=x.pt"],
        ["--slim", "--start", "sr"],
        ["--slim", "--start", "sr=/no"],
        ["--slim", "--only", "sr", "--start", f"clinical={__file__}"],
    ],
)
def test_start_is_refused_without_slim_an_existing_file_or_a_job_the_call_runs(argv):
    with pytest.raises(SystemExit) as stop:
        pack.main(argv)
    assert stop.value.code == 2


@pytest.mark.parametrize("only", [[], ["--only", "sr,clinical"]])
def test_spread_is_refused_where_the_3d_clinical_job_would_train(only):
    with pytest.raises(SystemExit) as stop:
        pack.main(["--slim", "--spread", *only])
    assert stop.value.code == 2


def test_resample_linear_matches_simpleitk():
    pytest.importorskip("SimpleITK")
    from mtsr_monai.data.clinical import pair_onto_grid

    rng = np.random.default_rng(1)
    hr = np.zeros((30, 26, 20), np.float32)
    hr[3:27, 4:22, 2:18] = rng.uniform(0.2, 1.0, size=(24, 18, 16))
    affine = np.array([[-1.0, 0, 0, 80], [0, -1.0, 0, 100], [0, 0, 1.2, -40], [0, 0, 0, 1]])
    # 5 mm thick sagittal slices: blocks of 5 voxels along x, each slice centred on its block; the last
    # 5 mm are not covered, so the rule for points past the moving volume's edge is exercised too
    lr = hr[:25].reshape(5, 5, 26, 20).mean(axis=1)
    lr_affine = affine @ np.array([[5.0, 0, 0, 2.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    expected = pair_onto_grid(lr, lr_affine, hr, affine, "header", "trilinear")
    got = device_train.pair_onto_grid_numpy(lr, lr_affine, hr, affine)
    assert (expected[27:] == 0).all() and (expected[24:27] > 0).any()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _args(**kw) -> Namespace:
    base = dict(cpu_smoke=True, sr_args="", sr_b_args="", mt_args="--lambda_l1 5.0", clinical_args="", seed=7)
    base["precision"] = "auto"
    base["payload"] = REPO / "no-payload"  # no manifest: the SR patch is not checked against slabs
    return Namespace(**{**base, **kw, "val_every": 20.0})


@pytest.mark.parametrize("name", ["sr", "mt_t1_flair", "clinical"])
def test_overrides_merge_into_the_bundle_config(tmp_path, name):
    from monai.bundle import ConfigParser

    (job,) = device_train.jobs_for(_args(only=[name]))
    paths = {k: tmp_path / f"{k}.json" for k in ("subjects", "volumes", "clinical")}
    overrides = device_train.write_overrides(job, tmp_path / name, paths, time.time() + 60, _args())
    configs = REPO / "bundles" / job.bundle / "configs"
    merged = ConfigParser.load_config_files([configs / "train.yaml", overrides])
    original = ConfigParser.load_config_file(configs / "train.yaml")
    # '+' appends: the bundle's own steps first, then ours, the wall-clock stop last
    assert merged["initialize"][: len(original["initialize"])] == original["initialize"]
    assert merged["initialize"][-1].startswith("$mtsr_monai.engines.handlers.WallClockStop(")
    assert "$import device_train" in merged["imports"]
    assert merged["output_dir"] == str(tmp_path / name) and merged["max_epochs"] == 10**6
    cmd = device_train.bundle_command(job, overrides, "python")
    assert cmd[1:5] == ["-m", "monai.bundle", "run", "training"]
    if name == "mt_t1_flair":
        assert merged["lambda_l1"] == 5.0 and merged["source"] == "t1" and merged["target"] == "flair"
    assert merged["seed"] == 7  # the call's own seed, not train.yaml's 0


def test_a_jobs_extra_arguments_win_over_the_call_settings(tmp_path):
    from monai.bundle import ConfigParser

    (job,) = device_train.jobs_for(_args(only=["sr"], sr_args="--num_threads 4 --precision fp32 --seed 3"))
    paths = {k: tmp_path / f"{k}.json" for k in ("subjects", "volumes", "clinical")}
    overrides = device_train.write_overrides(job, tmp_path / "sr", paths, time.time() + 60, _args())
    merged = ConfigParser.load_config_file(overrides)
    assert (merged["num_threads"], merged["precision"], merged["seed"]) == (4, "fp32", 3)


def test_unknown_job_is_refused():
    with pytest.raises(SystemExit, match="unknown job"):
        device_train.jobs_for(_args(only=["sr", "nope"]))


def test_datalists_are_absolute_and_split(tmp_path):
    data = tmp_path / "payload" / "data"
    data.mkdir(parents=True)
    listing = {
        "training": [
            {"subject": "a", "t1": "a_t1.nii.gz", "t2": "a_t2.nii.gz", "flair": "a_flair.nii.gz"},
            {"subject": "b", "t1": "b_t1.nii.gz", "flair": "b_flair.nii.gz"},
        ],
        "validation": [{"subject": "v", "t1": "v_t1.nii.gz", "t2": "v_t2.nii.gz", "flair": "v_flair.nii.gz"}],
    }
    (data / "subjects.json").write_text(json.dumps(listing))
    paths = device_train.write_datalists(tmp_path / "payload", tmp_path / "work", None)
    volumes = json.loads(paths["volumes"].read_text())
    assert len(volumes["training"]) == 5 and len(volumes["validation"]) == 3
    assert all(Path(v["hr"]).is_absolute() for v in volumes["training"])
    clinical = json.loads(paths["clinical"].read_text())
    assert [s["subject"] for s in clinical["training"]] == ["a"]
    held = sorted(device_train.clinical_held_out())
    assert held  # e.g. TCGA-FG-6692: trains SR and MT, but is the clinical bundle's test subject
    listing["training"][0]["subject"] = held[0]
    (data / "subjects.json").write_text(json.dumps(listing))
    again = device_train.write_datalists(tmp_path / "payload", tmp_path / "work2", None)
    assert json.loads(again["clinical"].read_text())["training"] == []
    one = device_train.write_datalists(tmp_path / "payload", tmp_path / "work1", 1)
    assert len(json.loads(one["subjects"].read_text())["training"]) == 1


def test_outbox_splits_and_respects_limits(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(device_train.PART + 1000))
    box = device_train.OutBox(out)
    names = box.put(big, "w.pt")
    assert names == ["w.pt.part0", "w.pt.part1"]
    assert b"".join((out / n).read_bytes() for n in names) == big.read_bytes()
    small = tmp_path / "s.bin"
    small.write_bytes(b"x")
    for i in range(device_train.MAX_FILES - 2 - 2):
        box.put(small, f"s{i}")
    with pytest.raises(RuntimeError, match="return limits"):
        box.put(small, "one_too_many")


def test_summary_written_during_the_run_does_not_take_a_weights_slot(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    device_train.write_summary(out, {"jobs": {}})
    small = tmp_path / "s.bin"
    small.write_bytes(b"x")
    box = device_train.OutBox(out)
    names = [box.put(small, f"w{i}")[0] for i in range(device_train.MAX_FILES - 2)]
    assert len(names) == device_train.MAX_FILES - 2  # + summary + logs = the limit


def test_weights_come_back_8bit_when_fp16_would_crowd_out_the_jobs_still_running(tmp_path):
    import torch

    out, run_dir = tmp_path / "out", tmp_path / "run"
    out.mkdir(), run_dir.mkdir()
    weights = run_dir / "export_w.pt"
    torch.save({"w": torch.randn(1024, 4096).half()}, weights)  # 8 MiB fp16, 4 MiB at 8 bits
    box = device_train.OutBox(out)
    box.pending_weights = 6  # 5 others keep 50 MiB: with the 7 reserved, 8 MiB more is over 64
    first = device_train.put_weights(box, weights, "w.pt")
    assert first["files"] == ["w.pt.int8"] and first["format"].startswith("8-bit")
    box.pending_weights = 1
    assert device_train.put_weights(box, weights, "v.pt") == {"files": ["v.pt"], "format": "fp16"}


def test_device_slim_hides_the_weights_from_git_refuses_commits_and_restores(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True)

    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "device_slim.sh").write_text((REPO / "scripts" / "device_slim.sh").read_text())
    (tmp_path / "bundles" / "b" / "models").mkdir(parents=True)
    (tmp_path / "bundles" / "b" / "models" / "w.pt").write_bytes(b"weights")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    slim = ["bash", str(tmp_path / "scripts" / "device_slim.sh")]
    subprocess.run([*slim, "on"], check=True, capture_output=True)
    travelling = git("ls-files", "--cached", "--others", "--exclude-standard").stdout.split()
    assert "bundles/b/models/w.pt" not in travelling and (tmp_path / "bundles/b/models/w.pt").exists()
    assert git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x").returncode != 0
    subprocess.run([*slim, "off"], check=True, capture_output=True)
    assert git("status", "--porcelain").stdout == "" and "w.pt" in git("ls-files").stdout


def test_wrapper_needs_out_and_a_payload(tmp_path):
    script = REPO / "scripts" / "device_train_all.sh"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    no_out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert no_out.returncode != 0 and "OUT" in no_out.stderr
    env.update(OUT=str(tmp_path / "out"), MTSR_DEVICE_PAYLOAD=str(tmp_path / "missing"))
    no_payload = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert no_payload.returncode == 2 and "pack_device_payload" in no_payload.stderr


def test_a_cvae_start_trains_without_gan_terms():
    cvae, gan = device_train.jobs_for(_args(only=["mt_t1_t2", "mt_t1_flair"]))  # 0.4.0 / 0.2.2 weights
    assert cvae.settings["lambda_gan"] == cvae.settings["lambda_gan2"] == 0.0
    assert "lambda_gan" not in gan.settings


def test_an_l1_only_start_stays_in_the_l1_phase():
    assert device_train.trained_with_gan({"phase": "L1 warm start"})
    assert not device_train.trained_with_gan({"phase": "L1 fine-tune; no BicycleGAN iterations (docs)"})
    (flair,) = device_train.jobs_for(_args(only=["mt_t1_flair"]))  # 0.4.2: an L1 weight average
    assert flair.settings["pretrain_iterations"] >= 10**9


WHOLE_PLANE, BRAIN_BOX = [[0, 240], [0, 240], [0, 72]], [[40, 184], [40, 210], [50, 98]]  # box: 144 x 170


def _payload_with_slab(payload: Path, box: list, mt_box: list | None = None) -> Path:
    """A payload manifest holding one training slab with this box (and an MT-only pair with ``mt_box``), as
    pack_device_payload writes it."""
    (payload / "data").mkdir()
    mt_training = [{"subject": "ms", "_box": mt_box}] if mt_box else []
    manifest = {
        "kept": {"training": [{"subject": "a", "_box": box}], "validation": [], "mt_training": mt_training}
    }
    (payload / "data" / "manifest.json").write_text(json.dumps(manifest))
    return payload


def test_an_sr_patch_larger_than_the_payload_slabs_is_refused(tmp_path):
    _payload_with_slab(tmp_path, BRAIN_BOX)
    (job,) = device_train.jobs_for(_args(only=["sr"], payload=tmp_path, sr_args="--hr_patch 144"))
    assert job.setting("hr_patch") == 144
    for too_large in ("--hr_patch 192", "--hr_patch=192"):
        with pytest.raises(SystemExit) as refused:
            device_train.jobs_for(_args(only=["sr"], payload=tmp_path, sr_args=too_large))
        assert refused.value.code == 2


@pytest.mark.parametrize("box, patch", [(WHOLE_PLANE, 192), (BRAIN_BOX, 128)])
def test_the_sr_job_trains_on_192_patches_where_the_slabs_hold_them(tmp_path, box, patch):
    payload = _payload_with_slab(tmp_path, box)
    (job,) = device_train.jobs_for(_args(only=["sr"], payload=payload, cpu_smoke=False))
    assert job.settings["hr_patch"] == patch
    assert job.settings["learning_rate"] == 5e-5


def test_mt_only_pairs_do_not_shrink_the_sr_patch(tmp_path):
    payload = _payload_with_slab(tmp_path, WHOLE_PLANE, mt_box=BRAIN_BOX)
    (job,) = device_train.jobs_for(_args(only=["sr"], payload=payload, cpu_smoke=False))
    assert job.settings["hr_patch"] == 192


def test_a_second_sr_recipe_runs_as_its_own_job_with_its_own_arguments():
    sr, sr_b = device_train.jobs_for(
        _args(only=["sr", "sr_b"], sr_args="--learning_rate 2e-5", sr_b_args="--hr_patch 96")
    )
    assert (sr.name, sr.bundle, sr.setting("learning_rate")) == ("sr", "mtsr_sr", 2e-5)
    assert (sr_b.name, sr_b.bundle, sr_b.setting("hr_patch")) == ("sr_b", "mtsr_sr", 96)
    assert sr_b.settings["init_checkpoint"] == sr.settings["init_checkpoint"]


def test_the_newest_checkpoint_of_a_run_is_found_beside_a_stray_checkpoint_best(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("checkpoint_best.pt", "checkpoint_8.pt", "checkpoint_12.pt"):
        (folder / name).write_bytes(b"")
    assert device_train.latest_checkpoint(tmp_path) == folder / "checkpoint_12.pt"


def test_a_cvae_start_exports_its_last_checkpoint_with_a_new_code_prior(tmp_path, monkeypatch, phantom):
    import torch
    import yaml

    from mtsr_monai.inference.translate import load_translator
    from mtsr_monai.networks.bicyclegan import build_networks

    volume = write_nifti(tmp_path / "t1.nii.gz", (phantom * 1000).astype(np.int16))
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"subject": "a", "t1": str(volume), "t2": str(volume)}]}))
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "device_overrides.yaml").write_text(yaml.safe_dump({"datalist": str(datalist)}))
    nets = build_networks(nz=4, ngf=4, nef=4, ndf=4, image_size=32, max_mult=4)
    states = {k: nets[k].state_dict() for k in ("generator", "encoder")}
    torch.save(states, run_dir / "checkpoints" / "checkpoint_7.pt")
    prior = {"weight": 0.5, "source": "t1", "csf": 0.9, "gm": 0.5, "wm": 0.3}
    start = dict(source="t1", target="t2", nz=4, ngf=4, image_size=32, native_resolution=True, max_mult=4,
                 target_scaling="median", iterations=100, code_prior={"mean": [9.0] * 4, "std": [1.0] * 4},
                 tissue_prior=prior)  # fmt: skip
    monkeypatch.setattr(device_train, "mt_meta", lambda source, target: start)
    device_train.export_mt(run_dir, tmp_path / "out.pt", "t1", "t2")
    generator, meta = load_translator(tmp_path / "out.pt")
    assert meta["iterations"] == 107 and meta["tissue_prior"] == prior
    assert meta["code_prior"]["checkpoint"] == "checkpoint_7.pt" and meta["code_prior"]["mean"] != [9.0] * 4
    for key, value in generator.state_dict().items():
        torch.testing.assert_close(value, states["generator"][key].half().float())


def test_the_clinical_export_records_the_runs_headroom_and_recipe_not_the_start_files(tmp_path):
    import torch

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recipe = {"simulation": "random", "headroom": 1.5, "filters": 8}
    (run_dir / "recipe.json").write_text(json.dumps(recipe))
    meta = {"network": {"filters": 8}, "modalities": ["t1"], "patch_size": 32, "intensity_headroom": 1.5}
    torch.save({"model": {"w": torch.ones(2)}, **meta}, run_dir / "model_best.pt")
    device_train.export_clinical(run_dir, tmp_path / "model.pt")
    out = torch.load(tmp_path / "model.pt", weights_only=True)
    assert {k: out[k] for k in meta} == meta and out["recipe"] == recipe
    assert out["model"]["w"].dtype == torch.float16 and out["critic"]  # the start's critic: no checkpoint
