"""The gpt2 command as a user runs it (subprocesses): third-party plugins, broken plugins, a torch-free --help."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cli_helpers import gpt2


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from gpt2_cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'datasets', 'transformers', 'tensorboard') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout and "generate" in out.stdout
    assert "HEAVY []" in out.stdout


def test_third_party_plugin_is_discovered(fixture_plugin: Callable[[str], dict[str, str]]) -> None:
    env = fixture_plugin("gpt2-example-command")
    listing = gpt2("plugins", env=env)
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if "example-command" in line)
    assert "0.3.1" in line and "register_commands: hello" in line
    help_ = gpt2("--help", env=env)
    assert "hello" in help_.stdout and "example plugin" in help_.stdout
    ran = gpt2("hello", "--name", "tests", env=env)
    assert ran.returncode == 0 and ran.stdout.strip() == "hello tests from gpt2-example-command"


def test_third_party_plugin_in_process(fixture_plugin: Callable[[str], dict[str, str]]) -> None:
    from gpt2_core.plugins import get_plugin_manager, plugin_versions

    fixture_plugin("gpt2-example-command")
    pm = get_plugin_manager()
    assert pm.get_plugin("example-command") is not None
    assert plugin_versions()["example-command"] == "0.3.1"
    pm.check_pending()


def broken_plugin(tmp_path: Path) -> dict[str, str]:
    """A distribution whose entry point names a module that raises on import."""
    site = tmp_path / "site"
    dist = site / "gpt2_broken-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gpt2-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[gpt2]\nbroken-plugin = gpt2_broken\n")
    (site / "gpt2_broken.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def test_a_broken_plugin_warns_and_the_cli_still_works(tmp_path: Path) -> None:
    env = broken_plugin(tmp_path)
    out = gpt2("plugins", env=env)
    assert out.returncode == 0
    assert "broken-plugin" in out.stderr and "broken on purpose" in out.stderr
    assert "gpt2-cli" in out.stdout and "broken-plugin" not in out.stdout
    # The allow-list keeps it from even being tried.
    quiet = gpt2("plugins", env={**env, "GPT2_LOAD_PLUGINS": "gpt2-cli"})
    assert quiet.returncode == 0 and "broken" not in quiet.stderr
    assert "gpt2-cli" in quiet.stdout and "gpt2-data" not in quiet.stdout


def test_user_error_is_one_line_without_traceback() -> None:
    out = gpt2("generate", "--model", "/nonexistent")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: /nonexistent: no such model directory"
    assert out.stdout == ""


def test_version() -> None:
    out = gpt2("--version")
    assert out.returncode == 0 and out.stdout.startswith("gpt2 0.") and "gpt2-core 0." in out.stdout
