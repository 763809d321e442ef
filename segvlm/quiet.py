"""Quiet commands: third-party progress bars, warnings and logs stay out of a person's terminal.

segvlm's commands show their own progress bars and messages. While a command runs, :func:`quiet` turns off
the progress bars of transformers, huggingface_hub and datasets ("Loading weights", "Writing model shards",
"Generating train split"), drops the Python warnings of other libraries (torch, supervision, transformers),
shows segvlm's own warnings as one ``warning: ...`` line each (once per message, without the source line),
and raises the loggers of those libraries, accelerate and Ray to ERROR. With ``--verbose`` (:func:`command`
adds the option to a typer command) everything is left as it is, for debugging.

Libraries already imported are switched through their own functions and switched back afterwards; those
imported during the command are silenced through the environment variables they read when imported (for
those the setting stays for the rest of the process, which for a command is its end).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

# Read by the libraries when they are imported.
ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
LOGGERS = ("transformers", "datasets", "huggingface_hub", "accelerate", "peft", "torch", "ray", "ray.data")
VERBOSE_HELP = "Show the progress bars, warnings and logs of the libraries underneath (transformers, torch, Ray...)."

_depth = 0
_shown: set[str] = set()


class SegvlmWarning(UserWarning):
    """A warning of segvlm's own, meant for the person running it (quiet commands show it as one line)."""


def is_quiet() -> bool:
    """True while a :func:`quiet` block is active (code that starts Ray uses it to pick Ray's log level)."""
    return _depth > 0


def warn_once(message: str) -> None:
    """Print ``warning: <message>`` on stderr, once per message while a quiet block lasts (always outside one)."""
    from rich.console import Console
    from rich.markup import escape

    if message in _shown:
        return
    if _depth:
        _shown.add(message)
    Console(stderr=True).print(f"[yellow]warning:[/] {escape(message)}")


@dataclass
class _Saved:
    """What :func:`quiet` changed, to put back on exit."""

    environment: dict[str, str | None] = field(default_factory=dict)
    logger_levels: dict[str, int] = field(default_factory=dict)
    undo: list[Callable[[], None]] = field(default_factory=list)


def _silence_imported_libraries(saved: _Saved) -> None:
    """Switch off the progress bars of libraries already imported, remembering how to switch them back."""
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        if not are_progress_bars_disabled():
            disable_progress_bars()
            saved.undo.append(enable_progress_bars)
    if "transformers.utils.logging" in sys.modules:
        from transformers.utils import logging as transformers_logging

        if transformers_logging.is_progress_bar_enabled():
            transformers_logging.disable_progress_bar()
            saved.undo.append(transformers_logging.enable_progress_bar)
    if "datasets.utils.tqdm" in sys.modules:
        from datasets.utils.tqdm import are_progress_bars_disabled as datasets_bars_disabled
        from datasets.utils.tqdm import disable_progress_bars as disable_datasets_bars
        from datasets.utils.tqdm import enable_progress_bars as enable_datasets_bars

        if not datasets_bars_disabled():
            disable_datasets_bars()
            saved.undo.append(enable_datasets_bars)


def _from_segvlm(category: type[Warning]) -> bool:
    """Whether the warning being shown was issued by segvlm: a :class:`SegvlmWarning`, or a ``UserWarning`` whose
    ``warnings.warn`` call sits in a segvlm module (the first frame outside the ``warnings`` module)."""
    if issubclass(category, SegvlmWarning):
        return True
    if not issubclass(category, UserWarning):
        return False
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") == "warnings":
        frame = frame.f_back
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return module == "segvlm" or module.startswith("segvlm.")


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """``warnings.showwarning`` inside :func:`quiet`: segvlm's warnings as one line, every other one dropped."""
    if _from_segvlm(category):
        warn_once(str(message))


@contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Keep third-party progress bars, warnings and logs out of the terminal for the ``with`` block.

    Args:
        verbose: leave everything as it is (the block then changes nothing).
    """
    global _depth
    if verbose:
        yield
        return
    saved = _Saved()
    for name, value in ENVIRONMENT.items():
        saved.environment[name] = os.environ.get(name)
        os.environ[name] = value
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.logger_levels[name] = logger.level
        logger.setLevel(logging.ERROR)
    _silence_imported_libraries(saved)
    _depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # every warning reaches _show_warning, which decides
            warnings.showwarning = _show_warning
            yield
    finally:
        _depth -= 1
        if not _depth:
            _shown.clear()
        for undo in reversed(saved.undo):
            undo()
        for name, level in saved.logger_levels.items():
            logging.getLogger(name).setLevel(level)
        for name, value in saved.environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def command(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a typer command with a ``--verbose`` option; without it the command runs inside :func:`quiet`.

    The option is added to the signature typer reads, so a command opts in with one decorator line and keeps
    its own parameters unchanged.
    """
    import typer

    signature = inspect.signature(func, eval_str=True)
    option = inspect.Parameter(
        "verbose",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)],
    )

    @functools.wraps(func)
    def run(*args: Any, verbose: bool = False, **kwargs: Any) -> Any:
        with quiet(verbose):
            return func(*args, **kwargs)

    run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), option])  # type: ignore[attr-defined]
    empty = inspect.Parameter.empty
    hints = {name: p.annotation for name, p in signature.parameters.items() if p.annotation is not empty}
    run.__annotations__ = {**hints, "verbose": option.annotation}
    return run
