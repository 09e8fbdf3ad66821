"""Exceptions that map to the command line's exit codes.

``InputError`` means the user gave something we refuse (bad file, bad argument): exit code 2.
Anything else escaping a command is an internal error: exit code 1.
"""

from __future__ import annotations

import ast
import atexit
import difflib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path


class InputError(ValueError):
    """Bad input or bad arguments; the message names the file and the problem in one line."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def exit_code_of(run: Callable[[], int | None], name: str) -> int:
    """A script's exit code, as the ``mtsr`` commands give theirs: ``run()``'s own (None: 0), 2 after one
    line naming the bad input when it raises :class:`InputError`, 130 / 143 after one line when Ctrl-C or
    SIGTERM stopped it (also when a library re-raised the interruption as another error, as ``torch.save``
    does when a second Ctrl-C lands inside it)."""
    try:
        return run() or 0
    except InputError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except BaseException as err:
        stop = _signal_stop(err)
        if stop is None:
            raise
        how = "interrupted (Ctrl-C)" if stop == 130 else f"stopped (exit code {stop})"
        print(f"{name}: {how}", file=sys.stderr)
        return stop


def _signal_stop(err: BaseException) -> int | None:
    """130 or 143 where Ctrl-C or SIGTERM (:func:`_exit_on_sigterm`, a training run's stop handler) lies
    along ``err``'s chain, else None (a ``sys.exit(0)`` is no interruption)."""
    stop = _interruption_in(err)
    if isinstance(stop, KeyboardInterrupt):
        return 130
    if isinstance(stop, SystemExit) and stop.code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        return int(stop.code)
    return None


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and its causes (else contexts), outermost first, each once."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def root_cause(err: BaseException) -> BaseException:
    """The first :class:`InputError` along ``err``'s chain of causes and contexts, else the innermost error
    (MONAI wraps causes in ``Failed to instantiate component ...`` and ``applying transform ...``)."""
    chain = _chain(err)
    return next((e for e in chain if isinstance(e, InputError)), chain[-1])


def _finish_and_exit(code: int) -> None:
    """The interpreter's exit steps (flush, atexit), then exit with ``code`` (an excepthook's would be 1)."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def _interruption_in(err: BaseException) -> BaseException | None:
    """The Ctrl-C or SIGTERM exit along ``err``'s chain of causes and contexts, if any (MONAI wraps them;
    one raised while another error was being handled has that error as its context)."""
    return next((e for e in _chain(err) if isinstance(e, (KeyboardInterrupt, SystemExit))), None)


def _bundle_run_excepthook(exc_type, exc, tb) -> None:
    """``sys.excepthook`` of ``python -m monai.bundle run``: bad input (an :class:`InputError` anywhere in
    the chain) ends with one line and exit code 2, as the ``mtsr`` commands do; Ctrl-C and SIGTERM (also when
    MONAI wraps them) with one line and 130 / 143; anything else with the usual traceback, then one line
    naming the cause rather than MONAI's wrapper (exit code 1)."""
    cause = _interruption_in(exc) or (root_cause(exc) if isinstance(exc, Exception) else exc)
    if isinstance(cause, KeyboardInterrupt):
        print("mtsr bundle run: interrupted (Ctrl-C)", file=sys.stderr)
        _finish_and_exit(130)
    if isinstance(cause, SystemExit) and isinstance(cause.code, int):
        _report_signal_exit(cause)
        _finish_and_exit(cause.code)
    if not isinstance(cause, InputError):
        sys.__excepthook__(exc_type, exc, tb)
    if not isinstance(cause, Exception):
        return
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    what = text if isinstance(cause, InputError) else f"{type(cause).__name__}: {text}"
    print(f"mtsr bundle run: error: {what}", file=sys.stderr)
    if isinstance(cause, InputError):
        _finish_and_exit(2)


class _QuietStops(logging.Filter):
    """Drops the traceback that MONAI's ``StatsHandler`` logs when a run is stopped by Ctrl-C or SIGTERM, or
    refused for bad input (a resume checkpoint that does not fit): the run's last line and exit code say
    why; the log line itself stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        # also where a library re-raised the interruption as another error (torch.save: a RuntimeError)
        stop = _interruption_in(err) if err else None
        refusal = next((e for e in _chain(err) if isinstance(e, InputError)), None) if err else None
        if isinstance(stop, (KeyboardInterrupt, SystemExit)):
            how = "Ctrl-C" if isinstance(stop, KeyboardInterrupt) else f"exit code {stop.code}"
            record.msg = f"run stopped ({how})"
        elif refusal is not None:
            record.msg = f"run refused: {str(refusal).strip().partition(chr(10))[0]}"
        else:
            return True
        record.exc_info, record.exc_text, record.args = None, None, ()
        return True


def quiet_stats_handler_log() -> None:
    """Add :class:`_QuietStops` (once) to the logger MONAI's ``StatsHandler`` logs to, made as it makes it
    (its own stdout handler): a bundle run, or a training script running one in its process."""
    # lazy: monai is loaded already where a bundle runs
    from monai.apps import get_logger

    log = get_logger("monai.handlers.StatsHandler")
    if not any(isinstance(f, _QuietStops) for f in log.filters):
        log.addFilter(_QuietStops())


_SIGNAL_EXIT: list[SystemExit] = []
_REPORTED: list[SystemExit] = []


def _report_signal_exit(stop: SystemExit | None = None) -> None:
    """The bundle run's last line for an exit by signal, printed once: from the excepthook where MONAI
    wrapped the exit in another error, at interpreter exit where it escaped as itself (no hook sees it)."""
    stop = stop or stopped_by_signal()
    if stop is not None and not _REPORTED:
        _REPORTED.append(stop)
        print(f"mtsr bundle run: stopped (exit code {stop.code})", file=sys.stderr)


def stopped_by_signal() -> SystemExit | None:
    """The exit that :func:`_exit_on_sigterm` raised in this process, if any (read by exit handlers)."""
    return _SIGNAL_EXIT[0] if _SIGNAL_EXIT else None


def _exit_on_sigterm(signum: int, frame) -> None:
    """SIGTERM (a batch scheduler's kill) as an exception, so that writers delete their temporary files as
    on Ctrl-C; SystemExit passes the ``except Exception`` blocks and ends the run with 128 + 15 = 143."""
    _SIGNAL_EXIT.append(SystemExit(128 + signum))
    raise _SIGNAL_EXIT[-1]


#: ``monai.bundle run``'s own arguments (everything else overrides a config key)
RUN_ARGUMENTS = {
    "run_id",
    "init_id",
    "final_id",
    "meta_file",
    "config_file",
    "logging_file",
    "tracking",
    "args_file",
}


def _options(argv: list[str]) -> dict[str, str]:
    """``{name: value}`` of ``--name value`` / ``--name=value`` in ``argv``."""
    options, i = {}, 0
    while i < len(argv):
        if argv[i].startswith("--"):
            name, eq, value = argv[i][2:].partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            options[name] = value
        i += 1
    return options


def warn_unknown_overrides(argv: list[str]) -> list[str]:
    """Warn (one line each, stderr) about ``monai.bundle run`` overrides whose top-level key no config file
    defines: MONAI adds them silently and nothing reads them (``--max_epoch 1`` trained for 100 epochs).
    Returns the names warned about; a config it cannot read is skipped silently (MONAI reports it)."""
    # lazy: only bundle runs read their configs here
    import yaml

    options = _options(argv)
    files = options.get("config_file", "")
    try:
        paths = ast.literal_eval(files) if files.startswith("[") else [files]
        keys = set()
        for path in paths:
            keys |= {str(k).lstrip("+") for k in (yaml.safe_load(Path(path).read_text()) or {})}
    except (OSError, ValueError, SyntaxError, yaml.YAMLError, AttributeError):
        return []
    unknown = [n for n in options if n not in RUN_ARGUMENTS and n.split("#")[0] not in keys]
    for name in unknown:
        close = difflib.get_close_matches(name.split("#")[0], sorted(keys), n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        print(
            f"mtsr bundle run: warning: --{name} is not a key of the config: it is ignored{hint}",
            file=sys.stderr,
        )
    return unknown


def install_bundle_excepthook() -> None:
    """Use :func:`_bundle_run_excepthook` when this process is ``python -m monai.bundle`` (also under
    torchrun) and nothing else replaced the default hook, and end it on SIGTERM through
    :func:`_exit_on_sigterm` where SIGTERM still has its default action; bundle configs import mtsr_monai,
    which calls this."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or not spec.name.startswith("monai.bundle"):
        return
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _bundle_run_excepthook
        quiet_stats_handler_log()
        if sys.argv[1:2] == ["run"]:
            warn_unknown_overrides(sys.argv[2:])
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        atexit.register(_report_signal_exit)
