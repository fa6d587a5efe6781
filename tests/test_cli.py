"""The dispatcher maps subcommands to their owners and errors to exit codes."""
import subprocess
import sys
import types

from harness import cli
from harness.errors import CheckFailed, ConfigError, InfraError


def test_help_lists_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in out


def test_unknown_subcommand_is_bad_input(capsys):
    assert cli.main(["explode"]) == 2
    assert "unknown subcommand 'explode'" in capsys.readouterr().err


def test_every_subcommand_target_exists():
    import importlib
    for name, (module, func, _) in cli.SUBCOMMANDS.items():
        assert callable(getattr(importlib.import_module(module), func)), name


def test_errors_become_one_line_and_their_exit_code(monkeypatch, capsys):
    for exc, code in [(ConfigError("bad", file="s.yaml", key="k", value=1), 2),
                      (InfraError("no daemon"), 3), (CheckFailed("goodput"), 1)]:
        def boom(argv, exc=exc):
            raise exc
        monkeypatch.setitem(sys.modules, "chaosloco_fake_cmd", types.SimpleNamespace(boom=boom))
        monkeypatch.setitem(cli.SUBCOMMANDS, "boom", ("chaosloco_fake_cmd", "boom", ""))
        assert cli.main(["boom"]) == code
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("chaosloco boom: ")


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage: chaosloco" in out.stdout
