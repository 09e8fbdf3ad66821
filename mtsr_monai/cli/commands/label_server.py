"""``mtsr label-server``: the MONAI Label app serving the three bundles (for 3D Slicer and other clients)."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from mtsr_monai.cli.arguments import integer_in

NAME = "label-server"
#: the MONAI Label environment beside the package's checkout
DEFAULT_PYTHON = Path(__file__).resolve().parents[3] / ".venv-label" / "bin" / "python"
HELP = "serve SR, translation and clinical SR to 3D Slicer through MONAI Label (monailabel start_server)"
DESCRIPTION = (
    "Runs `monailabel start_server` with this package's MONAI Label app (mtsr_monai/label/app, copied into "
    "--app-dir, where MONAI Label writes its files) on the "
    "volumes of --studies. MONAI Label needs numpy < 2, so it lives in its own environment, "
    ".venv-label (README.md, 'MONAI Label and 3D Slicer': the steps of .ci/label_env.sh); this command uses "
    "--python, else $MTSR_LABEL_PYTHON, else .venv-label/bin/python beside the package. Models: mtsr_sr "
    "(x4 in-plane), mtsr_mt (seed or mean of samples), clinical_sr (FLAIR alone or with its study's T1/T2)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--studies", required=True, type=Path, help="folder of NIfTI volumes (the datastore)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=integer_in(1, 65535), default=8000, help="default 8000")
    parser.add_argument(
        "--models",
        default="all",
        help="comma list of mtsr_sr, mtsr_mt, clinical_sr (or sr, mt, clinical; default all)",
    )
    parser.add_argument("--python", type=Path, default=None, help="python of the MONAI Label environment")
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=None,
        help="folder the server runs the app from, where MONAI Label writes its model/ and logs/ (default "
        "$XDG_DATA_HOME/mtsr-monai/label-app, else ~/.local/share/mtsr-monai/label-app)",
    )
    parser.add_argument("--dryrun", action="store_true", help="print the command instead of running it")


def label_python(explicit: Path | None = None) -> Path:
    """The MONAI Label environment's python: ``explicit`` (which must exist), ``$MTSR_LABEL_PYTHON`` or
    ``.venv-label``."""
    from mtsr_monai.errors import InputError

    if explicit is not None and not Path(explicit).is_file():
        raise InputError("--python: no such file", explicit)
    candidates = [explicit] if explicit else []
    if os.environ.get("MTSR_LABEL_PYTHON"):
        candidates.append(Path(os.environ["MTSR_LABEL_PYTHON"]))
    candidates.append(DEFAULT_PYTHON)
    for path in candidates:
        if path.is_file():
            return path
    raise InputError(
        "no MONAI Label environment (create .venv-label as README.md 'MONAI Label and 3D Slicer' says; "
        "or pass --python)",
        candidates[0],
    )


def server_command(args: argparse.Namespace, python: Path, app_dir: Path) -> list[str]:
    """The ``monailabel start_server`` command line for ``args``, run by ``python`` from ``app_dir``."""
    return [
        str(python),
        "-m",
        "monailabel.main",
        "start_server",
        "--app",
        str(app_dir),
        "--studies",
        str(Path(args.studies).resolve()),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--conf",
        "models",
        args.models,
    ]


def run(args: argparse.Namespace) -> int:
    import sys

    from mtsr_monai.errors import InputError
    from mtsr_monai.label import default_app_dir, prepare_app_dir, served_models

    if not Path(args.studies).is_dir():
        raise InputError("not a folder", args.studies)
    app_dir = Path(args.app_dir or default_app_dir()).resolve()
    if app_dir.exists() and not app_dir.is_dir():
        raise InputError("--app-dir: not a folder", app_dir)
    try:
        models = served_models(args.models)  # refused here, not when the server has started
    except ValueError as err:
        raise InputError(f"--models: {err}") from None
    from mtsr_monai.inference.bundle import bundles_root, verify_file

    for name in models:  # missing or damaged weights: one line now, not a traceback as the server starts
        verify_file(bundles_root() / name / "models" / "model.pt")
    if args.dryrun:  # the command, also before the default environment exists
        try:
            python = label_python(args.python)
        except InputError as err:
            if args.python is not None:
                raise
            print(f"mtsr label-server: note: {err}", file=sys.stderr)
            python = DEFAULT_PYTHON
        prepare_app_dir(app_dir, args.studies)  # so that the printed command runs as it is
        print(shlex.join(server_command(args, python, app_dir)))  # pastes as it is, spaces in paths included
        return 0
    python = label_python(args.python)
    return _serve(server_command(args, python, prepare_app_dir(app_dir, args.studies)))


def _serve(command: list[str]) -> int:
    """Run the server; on SIGTERM pass it on, and on either signal wait for the server's clean shutdown
    (uvicorn finishes the request in flight) rather than killing it; kill it after 60 s or a second signal.
    Ctrl-C is not passed on: the terminal sends it to the server too, and uvicorn forces its exit on a
    second one."""
    import signal
    import subprocess

    server = subprocess.Popen(command)
    try:
        return server.wait()
    except BaseException as stop:  # Ctrl-C, or the CLI's SIGTERM exception
        if not isinstance(stop, KeyboardInterrupt):
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        raise
