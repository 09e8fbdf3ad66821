"""Outputs are guarded before any work: never over an input, only where writable, one writer at a time;
SIGTERM cleans up like Ctrl-C; temporary files of killed runs are removed by the next run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mtsr_monai.cli import main
from mtsr_monai.io.outputs import OutputLocks
from tests.conftest import write_nifti

DEGRADE = ["--mode", "kspace", "--scale", "2"]


def _degrade(src: Path, out: Path) -> list[str]:
    return ["degrade", "--input", str(src), "--output", str(out), *DEGRADE]


@pytest.mark.parametrize(
    "make_args",
    [
        lambda src, tmp: _degrade(src, src),
        lambda src, tmp: ["evaluate", "--pred", str(src), "--ref", str(src), "--json", str(src)],
        lambda src, tmp: ["qc", "--input", str(src), "--save-tissues", str(src)],
        lambda src, tmp: ["clinical-sr", "--flair", str(src), "--spacing", "1", "-o", str(src.parent)],
    ],
    ids=["degrade", "evaluate-json", "qc-save-tissues", "clinical-sr-dir"],
)
def test_output_equal_to_an_input_is_refused_and_the_input_kept(tmp_path, phantom, make_args, capsys):
    src = write_nifti(tmp_path / "flair.nii.gz", phantom)
    before = src.read_bytes()
    assert main(make_args(src, tmp_path)) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["flair.nii.gz"]


def test_output_through_a_link_to_the_input_is_refused(tmp_path, phantom_file):
    link = tmp_path / "link.nii.gz"
    link.symlink_to(phantom_file)
    assert main(_degrade(phantom_file, link)) == 2


@contextlib.contextmanager
def _unwritable(folder: Path):
    """Make ``folder`` read-only for the code run inside; as root (who ignores permission bits) by
    running it with the effective uid of 'nobody'."""
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:
            os.seteuid(65534)
            try:
                yield
            finally:
                os.seteuid(0)
        else:
            yield
    finally:
        folder.chmod(0o755)


def test_read_only_output_folder_is_refused_before_any_work(phantom, capsys):
    base = Path(tempfile.mkdtemp(prefix="mtsr-ro-"))
    base.chmod(0o755)  # readable by 'nobody'
    src = write_nifti(base / "in.nii.gz", phantom)
    src.chmod(0o644)
    ro = base / "ro"
    ro.mkdir()
    with _unwritable(ro):
        code = main(_degrade(src, ro / "out" / "lr.nii.gz"))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write here" in err and str(ro) in err
    assert list(ro.iterdir()) == []


def _killed_run_locked(path) -> None:
    """What kill -9 of a run writing ``path`` leaves in the lock folder: its lock file, no longer held."""
    from mtsr_monai.io.outputs import lock_path

    lock_path(path).parent.mkdir(parents=True, exist_ok=True)
    lock_path(path).write_text("pid 1, killed")


def test_stale_temporary_file_of_a_killed_run_is_removed_by_the_next_run(tmp_path, phantom_file):
    out = tmp_path / "out" / "lr.nii.gz"
    out.parent.mkdir()
    stale = out.parent / ".lr.nii.gz.k1ll3d00.part.nii.gz"
    stale.write_bytes(b"left by kill -9")
    _killed_run_locked(out)
    unrelated = out.parent / "notes.part.txt"
    unrelated.write_text("not ours")
    assert main(_degrade(phantom_file, out)) == 0
    assert out.is_file() and not stale.exists() and unrelated.exists()


def test_the_staging_folder_of_a_killed_translation_is_removed_by_the_next_run(tmp_path):
    from mtsr_monai.io.outputs import OutputPlan, guard_outputs

    out = tmp_path / "out"
    staging = out / ".staged.k1ll3d00.part"
    staging.mkdir(parents=True)
    (staging / "sample_0.nii.gz").write_bytes(b"left by kill -9")
    _killed_run_locked(out)
    with guard_outputs(OutputPlan(files=[out / "mean.nii.gz"], folders=[out]), []):
        assert not staging.exists()


def test_second_run_on_a_locked_output_is_refused_and_writes_nothing(tmp_path, phantom_file, capsys):
    out = tmp_path / "lr.nii.gz"
    other = OutputLocks()  # stands for a concurrent run writing the same output
    other.acquire(out, "mtsr degrade")
    in_progress = tmp_path / ".lr.nii.gz.abcd1234.part.nii.gz"
    in_progress.write_bytes(b"being written")
    try:
        assert main(_degrade(phantom_file, out)) == 2
    finally:
        other.release()
    assert "another mtsr run" in capsys.readouterr().err
    assert not out.exists() and in_progress.exists()  # the other run's temporary file is left alone


def test_sigterm_inside_an_atomic_write_cleans_up_and_exits_143(tmp_path, phantom_file, monkeypatch):
    from mtsr_monai.cli.commands import degrade
    from mtsr_monai.io import atomic_output

    def run(args):
        with atomic_output(args.output) as tmp:
            tmp.write_bytes(b"half a volume")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
        return 0

    monkeypatch.setattr(degrade, "run", run)
    out = tmp_path / "out" / "lr.nii.gz"
    before = signal.getsignal(signal.SIGTERM)
    assert main(_degrade(phantom_file, out)) == 143
    assert not out.parent.exists()  # the folder this run created goes with it
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI's handler does not outlive main()


def test_a_failed_run_removes_the_empty_folders_it_created_and_keeps_existing_ones(
    tmp_path, phantom_file, monkeypatch
):
    from mtsr_monai.cli.commands import degrade
    from mtsr_monai.errors import InputError

    def run(args):
        Path(args.output).parent.mkdir(parents=True)
        raise InputError("failed half-way")

    monkeypatch.setattr(degrade, "run", run)
    assert main(_degrade(phantom_file, tmp_path / "new" / "deeper" / "lr.nii.gz")) == 2
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    monkeypatch.setattr(degrade, "run", lambda args: (_ for _ in ()).throw(InputError("failed at once")))
    assert main(_degrade(phantom_file, tmp_path / "kept" / "lr.nii.gz")) == 2
    assert (tmp_path / "kept").is_dir()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_landing_in_a_finalizer_still_ends_the_run(
    tmp_path, phantom_file, monkeypatch, signum, code
):
    from mtsr_monai.cli.commands import degrade

    class SignalledOnCollection:
        def __del__(self):
            os.kill(os.getpid(), signum)
            time.sleep(0.01)  # the handler runs here, where Python ignores what it raises

    def run(args):
        SignalledOnCollection()
        time.sleep(5)  # the run must not carry on to its end
        Path(args.output).write_bytes(b"finished")
        return 0

    monkeypatch.setattr(degrade, "run", run)
    out = tmp_path / "lr.nii.gz"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as `mtsr` has it (xdist ignores it)
    try:
        assert main(_degrade(phantom_file, out)) == code
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not out.exists()


def test_sigterm_to_a_running_command_exits_143_without_outputs(tmp_path, phantom):
    src = write_nifti(tmp_path / "in.nii.gz", np.tile(phantom, (4, 4, 4)))
    out = tmp_path / "out" / "lr.nii.gz"
    proc = subprocess.Popen([sys.executable, "-m", "mtsr_monai", *_degrade(src, out)], stderr=subprocess.PIPE)
    probe = OutputLocks()
    deadline = time.monotonic() + 60
    while not probe.is_busy(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the run holds its output lock from before its work until its end
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()[-500:]
    assert not out.exists() and not list(out.parent.glob(".*part*"))


def test_void_sform_is_refused_with_the_header_named(tmp_path, phantom, capsys):
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(phantom.shape)
    header.set_data_dtype(np.float32)
    header.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    header["sform_code"] = 1
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row][:] = 0
    src = tmp_path / "void_sform.nii.gz"
    nib.save(nib.Nifti1Image(phantom, None, header=header), str(src))
    out = tmp_path / "lr.nii.gz"
    assert main(_degrade(src, out)) == 2
    err = capsys.readouterr().err
    assert "sform is all zeros" in err and "void_sform.nii.gz" in err and not out.exists()


def test_complex_data_is_refused_rather_than_read_as_its_real_part(tmp_path, phantom, capsys):
    import nibabel as nib

    src = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image((phantom * np.exp(0.9j)).astype(np.complex64), np.eye(4)), str(src))
    out = tmp_path / "lr.nii.gz"
    assert main(_degrade(src, out)) == 2
    assert "complex data: give the magnitude image" in capsys.readouterr().err and not out.exists()


def test_a_zero_voxel_size_without_an_sform_is_refused(tmp_path, phantom, capsys):
    import nibabel as nib

    image = nib.Nifti1Image(phantom, None)
    image.header.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    image.header.set_sform(None, code=0)
    src = tmp_path / "pixdim0.nii"
    nib.save(image, str(src))
    raw = bytearray(src.read_bytes())
    raw[80:84] = np.float32(0).tobytes()  # pixdim[1] (x): nibabel would read it as 1 mm
    src.write_bytes(bytes(raw))
    out = tmp_path / "lr.nii.gz"
    assert main(_degrade(src, out)) == 2
    assert "no valid voxel size" in capsys.readouterr().err and not out.exists()


def test_nifti2_and_negative_voxel_sizes_without_an_sform_still_load(tmp_path, phantom):
    import nibabel as nib

    from mtsr_monai.io import load_volume

    affine = np.diag([1.2, 1.2, 3.0, 1.0])
    for kind in (nib.Nifti1Image, nib.Nifti2Image):
        image = kind(phantom, None)
        image.header.set_qform(affine, code=1)
        image.header.set_sform(None, code=0)
        nib.save(image, str(tmp_path / "q.nii"))
        if kind is nib.Nifti1Image:  # pixdim[1] stored as -1.2: nibabel reads its magnitude
            raw = bytearray((tmp_path / "q.nii").read_bytes())
            raw[80:84] = np.float32(-1.2).tobytes()
            (tmp_path / "q.nii").write_bytes(bytes(raw))
        np.testing.assert_allclose(np.abs(np.diag(load_volume(tmp_path / "q.nii").affine)), np.diag(affine))


def _like_with_sform(path: Path, sform: np.ndarray) -> Path:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((16, 16, 8))
    header.set_data_dtype(np.float32)
    header["sform_code"] = 1
    header["srow_x"][:], header["srow_y"][:], header["srow_z"][:] = sform[:3]
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 8).astype(np.float32), None, header=header), str(path))
    return path


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: write_nifti(p, np.random.rand(16, 16).astype(np.float32)), "3D"),
        (lambda p: _like_with_sform(p, np.diag([0.0, 1.0, 1.0, 1.0])), "sform is singular"),
        (lambda p: _like_with_sform(p, np.zeros((4, 4))), "sform is all zeros"),
    ],
    ids=["2D", "zero voxel size", "zero affine"],
)
def test_bad_like_reference_is_a_one_line_refusal(tmp_path, phantom_file, make, problem, capsys):
    like = make(tmp_path / "like.nii.gz")
    out = tmp_path / "out"
    code = main(["clinical-sr", "--t1", str(phantom_file), "--like", str(like), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "like.nii.gz" in err and problem in err and not out.exists()


def test_ctrl_c_inside_an_atomic_write_cleans_up_and_exits_130(tmp_path, phantom_file, monkeypatch):
    from mtsr_monai.cli.commands import degrade
    from mtsr_monai.io import atomic_output

    def run(args):
        with atomic_output(args.output) as tmp:
            tmp.write_bytes(b"half a volume")
            raise KeyboardInterrupt

    monkeypatch.setattr(degrade, "run", run)
    out = tmp_path / "out" / "lr.nii.gz"
    assert main(_degrade(phantom_file, out)) == 130
    assert not out.parent.exists()


def test_readme_states_the_exit_codes_the_cli_returns():
    from mtsr_monai import cli

    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    for code, meaning in [
        (cli.EXIT_OK, "success"),
        (cli.EXIT_BAD_INPUT, "bad input"),
        (cli.EXIT_INTERNAL, "internal error"),
        (cli.EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
        (cli.EXIT_TERMINATED, "terminated (SIGTERM"),
    ]:
        assert f"{code} {meaning}" in readme, (code, meaning)


def test_a_finished_run_leaves_no_lock_file_and_the_output_can_be_locked_again(tmp_path, phantom_file):
    from mtsr_monai.io.outputs import lock_path

    out = tmp_path / "lr.nii.gz"
    assert main(_degrade(phantom_file, out)) == 0
    assert out.exists() and not lock_path(out).exists()
    first, second = OutputLocks(), OutputLocks()
    first.acquire(out)
    first.release()
    second.acquire(out)  # a new lock file, not the one the release removed
    try:
        assert lock_path(out).exists() and second.holds(out)
        with pytest.raises(Exception, match="another mtsr run"):
            OutputLocks().acquire(out)
    finally:
        second.release()
    assert not lock_path(out).exists()


def test_a_lock_file_removed_between_open_and_lock_is_locked_anew(tmp_path, monkeypatch):
    from mtsr_monai.io import outputs

    lock = tmp_path / "out.lock"
    real_check, removed = outputs._is_current_file, []

    def release_in_between(fd, path):  # a finishing run unlinks the file after our open, before our check
        if not removed:
            removed.append(path)
            path.unlink()
        return real_check(fd, path)

    monkeypatch.setattr(outputs, "_is_current_file", release_in_between)
    fd = outputs.lock_file_exclusively(lock)
    try:
        assert removed and os.path.samestat(
            os.fstat(fd), os.stat(lock)
        )  # the lock is on the file that exists
        with pytest.raises(BlockingIOError):
            outputs.lock_file_exclusively(lock)
    finally:
        os.close(fd)


def test_stale_lock_files_of_killed_runs_are_pruned_but_not_a_held_or_recent_one(tmp_path):
    from mtsr_monai.io import outputs

    old = time.time() - outputs.STALE_LOCK_SECONDS - 60
    stale, held, recent = (tmp_path / f"{n}.lock" for n in ("stale", "held", "recent"))
    for lock in (stale, held, recent):
        lock.write_text("pid 1, mtsr")
    for lock in (stale, held):
        os.utime(lock, (old, old))
    fd = outputs.lock_file_exclusively(held)  # a live run's
    try:
        assert outputs.prune_stale_locks(tmp_path) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["held.lock", "recent.lock"]
    finally:
        os.close(fd)


def test_a_file_system_without_locks_is_reported_as_such_not_as_another_run(tmp_path, monkeypatch):
    import errno
    import fcntl

    from mtsr_monai.io import outputs

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(OSError, match="No locks available") as raised:
        outputs.lock_file_exclusively(tmp_path / "x.lock")
    assert not isinstance(raised.value, BlockingIOError)


def test_an_input_named_like_a_sample_in_a_folder_with_brackets_is_refused(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.io.outputs import OutputPlan, check_not_inputs

    folder = tmp_path / "br[1]"  # '[1]' of the folder is no wildcard: sample_3 is one of the samples
    plan = OutputPlan(files=[folder / "sample_*.nii.gz", folder / "mean.nii.gz"], folders=[folder])
    with pytest.raises(InputError, match="would overwrite the input"):
        check_not_inputs(plan, [folder / "sample_3.nii.gz"])
    check_not_inputs(plan, [tmp_path / "br1" / "sample_3.nii.gz"])  # another folder


def test_a_write_in_progress_in_a_sub_folder_of_an_output_folder_is_left_alone(tmp_path):
    from mtsr_monai.io.outputs import OutputPlan, guard_outputs

    out = tmp_path / "der"
    other = out / "sub-01" / "anat" / ".sub-01_desc-mtsrSR_T1w.nii.gz.6f8ftjko.part.nii.gz"  # mtsr bids, live
    other.parent.mkdir(parents=True)
    other.write_bytes(b"being written")
    with guard_outputs(OutputPlan(files=[out / "mean.nii.gz"], folders=[out]), []):
        assert other.is_file()


def test_a_killed_runs_staging_in_a_planned_sub_folder_is_removed(tmp_path):
    from mtsr_monai.io.outputs import OutputPlan, guard_outputs

    out = tmp_path / "demo"
    staging = out / "figures" / ".staged.k1ll3d00.part"  # a killed demo's figures
    staging.mkdir(parents=True)
    _killed_run_locked(out)
    with guard_outputs(OutputPlan(files=[out / "figures" / "*.png"], folders=[out]), []):
        assert not staging.exists()


def test_a_full_disk_inside_a_monai_transform_is_reported_in_the_systems_words():
    from mtsr_monai.cli import describe_failure

    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as disk:
            raise RuntimeError("applying transform <SaveVolumed object at 0x7f>") from disk
    except RuntimeError as wrapped:
        line = describe_failure(wrapped)
    assert line.startswith("error: OSError: [Errno 28] No space left on device") and "internal" not in line
    assert describe_failure(KeyError("x")) == "internal error: KeyError: 'x'"


def test_a_temporary_file_no_lock_here_accounts_for_is_left_until_it_is_an_hour_old(tmp_path):
    import os
    import time

    from mtsr_monai.io.outputs import OutputPlan, guard_outputs

    out = tmp_path / "shared"
    out.mkdir()
    live = out / ".x.nii.gz.n0d3b000.part.nii.gz"  # a run on another node, its locks in its own $TMPDIR
    old = out / ".z.nii.gz.n0d3b111.part.nii.gz"
    live.write_bytes(b"being written")
    old.write_bytes(b"left by a run killed elsewhere")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    with guard_outputs(OutputPlan(files=[out / "y.nii.gz"]), []):
        assert live.exists() and not old.exists()
