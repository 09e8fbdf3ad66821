"""Find a packaged MONAI bundle (``bundles/<name>/``), its files checked, and load its network.

One rule finds the bundles, in a git checkout and in an installed wheel alike: ``$MTSR_BUNDLES`` when set,
else ``mtsr_monai/bundles`` (package data in the wheel; in the checkout a link to the repository's
``bundles/`` folder). A shipped file is only used through :func:`bundle_file` / :func:`verify_file`, which
check its sha256 against the bundle's ``large_files.yml`` when that declares one (once per file version per
process). The network is built from the bundle's ``configs/inference.yaml#network_def`` and loaded from
``models/model.pt`` (a state dict, fp16 allowed).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtsr_monai.data.datalist import modality_from_name
from mtsr_monai.errors import InputError, quiet_stats_handler_log, root_cause, stopped_by_signal
from mtsr_monai.io import atomic_write_text, is_volume_file, load_volume, volume_stem
from mtsr_monai.io.manifest import MANIFEST_NAME, enclosing_bundle, manifest_entries
from mtsr_monai.io.outputs import OutputPlan, guard_outputs

DEFAULT_BUNDLE = "mtsr_sr"
BUNDLE_NAMES = ("mtsr_sr", "mtsr_mt", "clinical_sr")

__all__ = [
    "BUNDLE_NAMES",
    "DEFAULT_BUNDLE",
    "as_flag",
    "bundle_components",
    "bundle_dir",
    "bundle_file",
    "bundle_parser",
    "bundles_root",
    "declared_files",
    "find_sessions",
    "guard_bundle_outputs",
    "infer_item",
    "load_bundle_network",
    "override_args",
    "parse_overrides",
    "read_weights",
    "sha256",
    "verify_file",
    "volume_files",
    "weights_path",
]


def bundles_root() -> Path:
    """``$MTSR_BUNDLES`` if set, else ``mtsr_monai/bundles`` (the wheel's package data, or in a git checkout
    the link to ``bundles/``): the one place the checkout and the installed package look."""
    env = os.environ.get("MTSR_BUNDLES")
    return Path(env) if env else (Path(__file__).resolve().parents[1] / "bundles").resolve()


def bundle_dir(bundle: str | os.PathLike | None = None) -> Path:
    """A bundle folder: an explicit path holding ``configs/``, or a name under :func:`bundles_root`."""
    candidate = Path(bundle) if bundle else bundles_root() / DEFAULT_BUNDLE
    if not (candidate / "configs").is_dir() and bundle and not Path(bundle).is_absolute():
        candidate = bundles_root() / str(bundle)
    if not (candidate / "configs").is_dir():
        raise InputError(
            "not a MONAI bundle (no configs/ folder): give a bundle folder, or a bundle name under "
            "$MTSR_BUNDLES",
            candidate,
        )
    return candidate


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def declared_files(root: str | os.PathLike) -> dict[str, str]:
    """``{relative path: sha256}`` of the files a bundle's ``large_files.yml`` declares with a sha256."""
    return {
        Path(item["path"]).as_posix(): str(item["hash_val"])
        for item in manifest_entries(root)
        if item.get("hash_val") and item.get("hash_type", "sha256") == "sha256"
    }


def _declared_hash(root: Path, rel: str) -> str | None:
    return declared_files(root).get(Path(rel).as_posix())


# (resolved path, size, mtime) -> sha256: a file is hashed once per version per process
_VERIFIED: dict[tuple[str, int, int], str] = {}


def as_flag(value: Any, name: str = "switch") -> bool:
    """A config switch as a bool. ``python -m monai.bundle run ... --progress false`` passes the string
    ``'false'`` (its argument parser reads only ``False`` as a bool), which ``bool()`` would take as true."""
    if not isinstance(value, str):
        return bool(value)
    word = value.strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off", "none", "null", ""):
        return False
    raise InputError(f"{name} must be true or false, got {value!r}")


def _override_value(text: str) -> Any:
    """A Python literal (``5e-5``, ``None``, ``[1, 2]``), else YAML's ``true`` / ``false`` / ``null`` or a
    YAML mapping or list (``{t1: 0.2}``), else the text itself (names, ``$`` expressions, ``@`` references;
    also ``on``, ``010``, ``1:30``, which YAML 1.1 would turn into a bool and numbers)."""
    # lazy: only training scripts read overrides
    import ast

    import yaml

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    words = {"true": True, "false": False, "null": None, "~": None}
    if text.strip().lower() in words:
        return words[text.strip().lower()]
    if text.lstrip()[:1] in ("{", "["):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        return value if isinstance(value, (list, dict)) else text
    return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Bundle config overrides from a command line: ``--key value`` or ``--key=value`` (as ``monai.bundle
    run`` takes them) or ``key=value``. Every training script reads its overrides here, so ``null``,
    ``true`` and ``5e-5`` mean the same everywhere. InputError for a token that is none of these."""
    out: dict[str, Any] = {}
    tokens = list(items)
    while tokens:
        token = tokens.pop(0)
        key, eq, value = token.removeprefix("--").partition("=")
        if not token.startswith("--") and not eq:
            raise InputError(f"a bundle override is --key value or key=value, not {token!r}")
        if not eq:
            if not tokens or tokens[0].startswith("--"):
                raise InputError(f"bundle override {token!r} has no value")
            value = tokens.pop(0)
        if not key:
            raise InputError(f"bundle override {token!r} has no key")
        out[key] = _override_value(value)
    return out


def run_training(bundle: str | os.PathLike, overrides: Mapping[str, Any]) -> None:
    """``python -m monai.bundle run training`` of ``bundle``'s ``configs/train.yaml`` (with its metadata and
    logging files) and ``overrides``, in this process: Ctrl-C and SIGTERM reach the run's own handlers, which
    save the iteration and exit 130 / 143 (a child behind ``subprocess.call`` was killed 0.25 s after
    Ctrl-C, before it could save); bad input raises the InputError behind MONAI's wrapper (exit 2)."""
    from monai.bundle import run  # lazy: MONAI loads in seconds

    configs = Path(bundle) / "configs"
    files = {"config_file": str(configs / "train.yaml"), "bundle_root": str(bundle)}
    for key, name in (("meta_file", "metadata.json"), ("logging_file", "logging.conf")):
        if (configs / name).is_file():
            files[key] = str(configs / name)
    quiet_stats_handler_log()
    try:
        run("training", **files, **overrides)
    except Exception as err:
        cause = root_cause(err)
        if isinstance(cause, InputError):
            raise cause from None
        raise


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``overrides`` as ``monai.bundle run`` arguments that its parser (fire's) and :func:`parse_overrides`
    both read back as the same values: a string stays bare where both leave it as it is, every other value
    is its repr (bare, ``'5'`` would be read as a number, ``'a,b'`` as a tuple, ``'true'`` as a bool)."""
    # lazy: only training scripts build bundle command lines
    from fire.parser import DefaultParseValue

    words = []
    for key, value in overrides.items():
        bare = isinstance(value, str) and DefaultParseValue(value) == value == _override_value(value)
        words += [f"--{key}", value if bare else repr(value)]
    return words


def verify_file(path: str | os.PathLike) -> Path:
    """``path``, after checking its sha256 when the bundle holding it declares one in ``large_files.yml``
    (files outside a bundle pass unchecked). InputError naming the file when it is missing or differs."""
    path = Path(path)
    if not path.is_file():
        raise InputError("bundle file not found (train the bundle or pass the weights)", path)
    resolved = path.resolve()
    expected = _declared_hash_of(Path(os.path.abspath(path))) or _declared_hash_of(resolved)
    if expected is None:
        return path
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256(resolved)
    if _VERIFIED[key] != expected:
        raise InputError("weights do not match the sha256 declared in large_files.yml", path)
    return path


def _declared_hash_of(location: Path) -> str | None:
    """The sha256 that the bundle enclosing ``location`` declares for it. Looked up where the path says
    (a link in a bundle's models/ is that bundle's file, wherever it points) and, by the caller, where it
    points (a link elsewhere to a bundle's file)."""
    root = enclosing_bundle(location.parent)
    return _declared_hash(root, location.relative_to(root).as_posix()) if root else None


def sr_weights_path() -> Path:
    """The SR weights: ``$MTSR_SR_WEIGHTS``, else the SR bundle's ``models/model.pt`` (under
    :func:`bundles_root`)."""
    env = os.environ.get("MTSR_SR_WEIGHTS")
    return Path(env) if env else weights_path("mtsr_sr")


def declared_sr_scale() -> int:
    """The scale the SR bundle's ``inference.yaml`` declares (``scale``), read without building anything."""
    # lazy: pyyaml only where a command asks
    import yaml

    config = yaml.safe_load((bundle_dir("mtsr_sr") / "configs" / "inference.yaml").read_text())
    return int(config["scale"])


def sr_scale_refused(model_scale: int, scale: int) -> InputError:
    """The refusal of a ``--scale`` the SR model does not make (a CLI checks it before any work, with the
    bundle's declared scale; the pipeline again with the loaded network's)."""
    return InputError(
        f"the SR model upsamples x{model_scale}, not x{scale}: use --scale {model_scale}, or an "
        "interpolation (--sr-method bicubic) for other factors"
    )


def bundle_file(rel: str, bundle: str | os.PathLike | None = None) -> Path:
    """The checked file ``rel`` (e.g. ``models/t1_to_flair.pt``) of a bundle (name or folder; default the
    SR bundle): :func:`verify_file` of ``bundle_dir(bundle) / rel``."""
    return verify_file(bundle_dir(bundle) / rel)


def weights_path(bundle: str, rel: str = "models/model.pt") -> Path:
    """Where a packaged bundle keeps a weights file, ``bundles_root() / bundle / rel``: the one place the
    default weights paths are made (not checked here: :func:`read_weights` checks what it reads)."""
    return bundles_root() / bundle / rel


def read_weights(
    path: str | os.PathLike, missing: str = "bundle weights not found (train the bundle or pass the weights)"
) -> Any:
    """The object a weights file holds (``torch.load``, tensors only), read only after :func:`verify_file`
    checked its sha256: the one way weights are read. InputError naming the file when it is missing (with
    the message ``missing``), differs from its declared sha256 or cannot be read."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(missing, path)
    verify_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise InputError(f"cannot read weights ({exc.__class__.__name__})", path) from exc


def load_bundle_network(
    bundle: str | os.PathLike | None = None,
    device: str = "cpu",
    weights: str | os.PathLike | None = None,
    config: str = "configs/inference.yaml",
) -> tuple[Any, dict]:
    """``(network in eval mode on device, info)``; ``info`` holds the bundle path, weights path and metadata.

    Raises :class:`InputError` naming the file when the bundle, its weights or their checksum is wrong.
    """
    root = bundle_dir(bundle)
    parser = bundle_parser(root, config=config)
    network = parser.get_parsed_content("network_def", instantiate=True)
    weights_file = Path(weights) if weights else root / "models" / "model.pt"
    load_weights_into(network, read_weights(weights_file), weights_file)
    network = network.float().to(device).eval()
    info = {"bundle": str(root), "weights": str(weights_file), "metadata": parser.get("_meta_", {})}
    return network, info


def load_weights_into(network: Any, state: Any, path: str | os.PathLike) -> Any:
    """``network`` with the state dict ``state`` (or its ``model`` entry; DDP's ``module.`` prefixes
    dropped) loaded strictly; :class:`InputError` naming ``path`` when it does not fit."""
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError("holds no state dict", path)
    try:
        network.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = " ".join(lines[:2])[:300]
        raise InputError(f"weights do not fit the bundle's network: {detail}", path) from exc
    return network


def declare_weights(bundle: str | os.PathLike, rel: str) -> str:
    """Record the sha256 of ``bundle/rel`` in the bundle's ``large_files.yml`` (its entry replaced or
    added, the others kept; written atomically), so :func:`verify_file` accepts the new file. Returns it."""
    root = Path(bundle)
    digest = sha256(root / rel)
    spec = root / MANIFEST_NAME
    text = spec.read_text() if spec.is_file() else "large_files:\n"
    entry = f"  - path: {rel}\n    url: ''\n    hash_val: {digest}\n    hash_type: sha256\n"
    pattern = re.compile(r"  - path: " + re.escape(rel) + r"\n(    .*\n){3}")
    text = pattern.sub(lambda _: entry, text) if pattern.search(text) else text.rstrip("\n") + "\n" + entry
    atomic_write_text(spec, text)
    return digest


def bundle_parser(
    bundle: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    config: str = "configs/inference.yaml",
) -> Any:
    """A ``ConfigParser`` of a bundle's config (and metadata) with ``bundle_root`` set and ``overrides``
    applied (``"a#b"`` ids), as ``python -m monai.bundle run --a#b value`` would."""
    from monai.bundle import ConfigParser

    root = bundle_dir(bundle)
    parser = ConfigParser()
    parser.read_config(str(root / config))
    meta_file = root / "configs" / "metadata.json"
    if meta_file.is_file():
        parser.read_meta(str(meta_file))
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def bundle_components(
    bundle: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    config: str = "configs/inference.yaml",
    inferer: str | None = None,
) -> dict[str, Any]:
    """``preprocessing``, ``inferer`` and ``postprocessing`` of a bundle's inference config: the objects
    its evaluator runs (``python -m monai.bundle run inference``), built here for the CLI and MONAI Label.
    ``inferer``: the inferer class the caller's task needs (e.g. ``SliceSRInferer``); a bundle declaring
    another is refused (:class:`InputError`) before anything is built: a translation bundle given to
    ``mtsr super-resolve`` wrote a folder of translations where the SR file should be."""
    parser = bundle_parser(bundle, overrides, config)
    declared = str(parser.get("inferer#_target_", "") or "")
    if inferer is not None and declared.rsplit(".", 1)[-1] != inferer:
        raise InputError(
            f"its {config} runs {declared.rsplit('.', 1)[-1] or 'no inferer'}, not {inferer}: give a bundle "
            "of this command's task",
            bundle_dir(bundle),
        )
    return {
        k: parser.get_parsed_content(k, instantiate=True)
        for k in ("preprocessing", "inferer", "postprocessing")
    }


def _input_error_in(err: BaseException) -> InputError | None:
    """The :class:`InputError` behind MONAI's ``RuntimeError("applying transform ...")`` wrappers."""
    seen = err
    while seen is not None:
        if isinstance(seen, InputError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def infer_item(
    components: dict[str, Any],
    item: dict[str, Any],
    network: Any,
    image_key: str = "image",
    pred_key: str = "pred",
) -> dict[str, Any]:
    """Run ``preprocessing``, the ``inferer`` on the one-item batch, ``postprocessing`` (as the bundle's
    evaluator does per item); returns the post-processed item. Bad input raises :class:`InputError`."""
    import torch

    try:
        d = components["preprocessing"](dict(item))
        with torch.inference_mode():
            pred = components["inferer"](d[image_key][None], network)
        d[pred_key] = pred[0]
        return components["postprocessing"](d)
    except RuntimeError as err:
        cause = _input_error_in(err)
        if cause is not None:
            raise cause from None
        raise


def checkpoint_meta(path: str | os.PathLike, train_hint: str | None = None) -> dict:
    """The ``meta`` dict of a weights file that has one (MT: nz, ngf, image_size, native_resolution ...);
    a missing file is named with ``train_hint`` (how to train one) when given."""
    ckpt = read_weights(path, f"no such weights file ({train_hint})") if train_hint else read_weights(path)
    return dict(ckpt.get("meta", {})) if isinstance(ckpt, dict) else {}


def _folder(dataset_dir: str | os.PathLike) -> Path:
    root = Path(dataset_dir)
    if not root.is_dir():
        raise InputError("no such folder (set --dataset_dir to the folder holding the scans)", root)
    return root


def file_list(files: Any, option: str = "input_files") -> list[str]:
    """A bundle's list-of-paths option as a list: one path given alone (``--input_files a.nii.gz``, which
    would otherwise be read letter by letter) is a list of one; anything but paths is refused."""
    if isinstance(files, (str, os.PathLike)):
        return [str(files)]
    if not isinstance(files, (list, tuple)) or not all(isinstance(f, (str, os.PathLike)) for f in files):
        example = "\"['a.nii.gz', 'b.nii.gz']\""
        raise InputError(f"--{option} must be a list of paths, e.g. {example}, got {files!r}")
    return [str(f) for f in files]


def volume_files(dataset_dir: str | os.PathLike) -> list[str]:
    """The volumes (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) directly in ``dataset_dir``, sorted: a bundle's
    default ``input_files``. Files named as brain masks or labels (``*_mask``, ``*_seg``, as ``mtsr datalist``
    reads names) are left out with a warning. InputError when the folder does not exist."""
    files = sorted(f for f in _folder(dataset_dir).iterdir() if f.is_file() and is_volume_file(f))
    kept = []
    for f in files:
        if modality_from_name(volume_stem(f)) in ("brain_mask", "label"):
            warnings.warn(f"{f}: named as a mask or label, not an image: not used", stacklevel=2)
        else:
            kept.append(str(f))
    return kept


def find_sessions(
    dataset_dir: str | os.PathLike, sequences: tuple[str, ...] = ("flair", "t1", "t2")
) -> list[dict]:
    """Routine sessions under ``dataset_dir``: each sub-folder (or the folder itself) holding volumes named
    after their sequence (``*flair*``, ``*t1*``, ``*t2*``, as ``mtsr datalist`` reads them) gives
    ``{sequence: path, "session": <sub-folder name>}``. InputError when the folder does not exist."""
    root = _folder(dataset_dir)
    sessions = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        found: dict[str, Any] = {}
        for f in sorted(p for p in folder.iterdir() if p.is_file() and is_volume_file(p)):
            mod = modality_from_name(volume_stem(f))
            if mod in sequences and mod not in found:
                found[mod] = str(f)
                continue
            # not silently dropped: the session would be restored without it, or with another run
            why = {None: "no sequence recognised in the name (flair, t1, t2, ...)"}.get(mod, f"a {mod} scan")
            if mod in found:  # two runs of one sequence: the first in sorted order is used
                why = f"{mod} is already {Path(found[mod]).name}"
            if mod not in ("brain_mask", "label"):  # not scans
                warnings.warn(f"{f}: not used, {why}", stacklevel=2)
        if found:
            found["session"] = folder.name
            sessions.append(found)
    return sessions


#: the output guards of this process's bundle run: held (locks included) until the process ends
_BUNDLE_GUARDS = contextlib.ExitStack()
#: ``sys.last_value`` when the guards were taken (a host such as pytest or IPython may have set one before)
_LAST_ERROR_BEFORE: list[BaseException | None] = []


def _close_bundle_guards() -> None:
    """Release the bundle run's output locks at exit; after a failed or interrupted run (an uncaught
    exception since the guards were taken, SIGTERM) also remove the empty output folders it created, as
    ``mtsr`` commands do."""
    last = getattr(sys, "last_value", None)
    failure = (last if last is not _LAST_ERROR_BEFORE[0] else None) or stopped_by_signal()
    if failure is None:
        _BUNDLE_GUARDS.close()
    else:
        _BUNDLE_GUARDS.__exit__(type(failure), failure, failure.__traceback__)


def guard_bundle_outputs(
    datalist: Sequence[dict], postprocessing: Any, dataset_dir: str | os.PathLike | None = None
) -> list[dict]:
    """What ``mtsr`` checks before any command, for a ``python -m monai.bundle run`` (first in its config's
    ``run``, after the zoo's ``initialize``, which must work without data): refuse (InputError) an empty
    run, an unreadable or invalid input file (NaN, not 3D: all of them are read first), an output that is
    an input, two items writing one output, an unwritable output place and an output another run is
    writing; then clear the temporary files killed runs left. The outputs are what the writers of
    ``postprocessing`` (a ``Compose`` or one transform) plan for each item; returns ``datalist``."""
    _BUNDLE_GUARDS.close()  # an earlier run of this process (a notebook's, a test's) is over
    if not datalist:
        where = f" (no volumes in {dataset_dir})" if dataset_dir is not None else ""
        raise InputError(f"nothing to run on: no input files{where}")
    transforms = getattr(postprocessing, "transforms", [postprocessing])
    writers = [t for t in transforms if hasattr(t, "planned_outputs")]
    plan, inputs, owners = OutputPlan(), [], {}
    for item in datalist:
        # every existing file (a notes.txt among the inputs is refused by its read below) and every
        # volume-named path (a missing one is refused now, not after the items before it were written)
        paths = [v for v in item.values() if isinstance(v, (str, os.PathLike))]
        sources = [str(v) for v in paths if is_volume_file(v) or Path(v).is_file()]
        missing = next((src for src in sources if not Path(src).is_file()), None)
        if missing is not None:
            raise InputError("no such file", missing)
        inputs += sources
        for writer in writers:
            planned = writer.planned_outputs(item)
            for out in [*planned.folders, *planned.concrete_files()]:
                first = owners.setdefault(out.resolve(), sources[0] if sources else "?")
                if sources and first != sources[0]:
                    raise InputError(
                        f"two inputs would write here ({first} and {sources[0]}): rename one", out
                    )
            plan.files += planned.files
            plan.folders += planned.folders
    for source in dict.fromkeys(inputs):  # a bad scan found now, not after the items before it were written
        load_volume(source, allow_constant=True)
    scans = Path(dataset_dir).resolve() if dataset_dir is not None else None
    read_there = scans is not None and any(Path(src).resolve().is_relative_to(scans) for src in inputs)
    among = [f for f in plan.concrete_files() if read_there and f.resolve().is_relative_to(scans)]
    among = [f for f in among if is_volume_file(f)]
    if among:  # a later run would take them for scans (the clinical sessions are sub-folders), and refuse
        raise InputError("would be written among the scans of --dataset_dir, which a later run reads as "
                         "inputs: give another --output_dir", among[0])  # fmt: skip
    _BUNDLE_GUARDS.enter_context(guard_outputs(plan, inputs, what="monai.bundle run"))
    if not _LAST_ERROR_BEFORE:
        _LAST_ERROR_BEFORE.append(getattr(sys, "last_value", None))
        atexit.register(_close_bundle_guards)
    return list(datalist)
