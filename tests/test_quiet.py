"""Quiet commands: other libraries' warnings, bars and logs are dropped, segvlm's warnings stay as one line."""

from __future__ import annotations

import logging
import os
import warnings

import pytest
import typer
from typer.testing import CliRunner

from segvlm.quiet import ENVIRONMENT, SegvlmWarning, command, is_quiet, quiet


def _warn_from(module: str, message: str, category: type[Warning] = UserWarning) -> None:
    """Issue a warning from code that belongs to ``module`` (what the quiet filter looks at)."""
    code = compile("warnings.warn(message, category)", f"<{module}>", "exec")
    exec(code, {"__name__": module, "warnings": warnings, "message": message, "category": category})


def test_segvlm_warnings_become_one_line_and_other_libraries_warnings_are_dropped(capsys):
    with quiet():
        assert is_quiet()
        _warn_from("segvlm.query", "OWLv2 reads at most 16 text tokens")
        _warn_from("segvlm.query", "OWLv2 reads at most 16 text tokens")  # the same message is said once
        _warn_from("torch.nn.modules", "a torch warning")
        _warn_from("supervision.annotators", "OpenCV is not installed")
        _warn_from("some.plugin", "said by a plugin on segvlm's behalf", SegvlmWarning)
        _warn_from("segvlm.tracking", "a deprecation", DeprecationWarning)
    assert not is_quiet()
    err = capsys.readouterr().err
    assert err.count("warning: OWLv2 reads at most 16 text tokens") == 1
    assert "warning: said by a plugin" in err
    assert "torch" not in err and "OpenCV" not in err and "deprecation" not in err
    assert "UserWarning" not in err and ".py:" not in err  # no source lines


def test_quiet_puts_back_what_it_changed():
    logger = logging.getLogger("transformers")
    logger.setLevel(logging.INFO)
    before = {name: os.environ.get(name) for name in ENVIRONMENT}
    filters = list(warnings.filters)
    with quiet():
        assert logger.level == logging.ERROR
        assert all(os.environ[name] == value for name, value in ENVIRONMENT.items())
    assert logger.level == logging.INFO
    assert {name: os.environ.get(name) for name in ENVIRONMENT} == before
    assert warnings.filters == filters


def test_quiet_turns_off_the_progress_bars_of_libraries_already_imported():
    from transformers.utils import logging as transformers_logging

    transformers_logging.enable_progress_bar()
    with quiet():
        assert not transformers_logging.is_progress_bar_enabled()
    assert transformers_logging.is_progress_bar_enabled()


def test_verbose_leaves_everything_as_it_is():
    with quiet(verbose=True):
        assert not is_quiet()
        with pytest.warns(UserWarning, match="a torch warning"):
            _warn_from("torch.nn.modules", "a torch warning")


def test_the_command_decorator_adds_verbose_to_a_typer_command():
    seen = []

    @command
    def hello(name: str = typer.Option("world", "--name")) -> None:
        """Say hello."""
        seen.append((name, is_quiet()))

    app = typer.Typer()
    app.command()(hello)

    @app.callback()
    def main() -> None:
        """test app"""

    runner = CliRunner()
    assert runner.invoke(app, ["hello", "--name", "you"]).exit_code == 0
    assert runner.invoke(app, ["hello", "--verbose"]).exit_code == 0
    assert seen == [("you", True), ("world", False)]
    assert "--verbose" in runner.invoke(app, ["hello", "--help"]).output
