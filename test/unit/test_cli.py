import subprocess
import sys

from async_vla_ros.cli import build_parser, main


def test_help_lists_commands(capsys):
    parser = build_parser()
    text = parser.format_help()
    assert "env" in text


def test_no_command_prints_help_and_succeeds(capsys):
    assert main([]) == 0
    assert "usage: async-vla-ros" in capsys.readouterr().out


def test_unknown_command_is_a_clear_error(capsys):
    try:
        main(["frobnicate"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_runs_in_a_fresh_process():
    out = subprocess.run(
        [sys.executable, "-m", "async_vla_ros.cli", "env", "--check"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in out.stdout


def test_every_registered_command_builds_its_parser():
    """Commands load lazily, so check each one's module and arguments here."""
    import pytest

    from async_vla_ros.cli import _COMMANDS

    for cmd in _COMMANDS:
        argv = [cmd.group, cmd.name] if cmd.group else [cmd.name]
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--help"])
        assert exc.value.code == 0, cmd


def test_help_does_not_import_heavy_modules():
    code = "import sys; from async_vla_ros.cli import build_parser; build_parser([]).format_help(); print('torch' in sys.modules, 'rclpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
