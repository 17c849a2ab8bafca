"""The gpt2 command in-process: generate on a tiny model, --version, user errors, the plugin host."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import loaded_llms
from gpt2_cli.main import main
from gpt2_core import hookspecs
from gpt2_core.errors import RunStopped
from gpt2_core.hookspecs import hookimpl
from gpt2_core.plugins import collect, get_plugin_manager


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from gpt2_core import GPT, get_preset

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "nano"
    GPT(get_preset("nano")).save_pretrained(path)
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import gpt2_cli
    import gpt2_core

    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert f"gpt2 {gpt2_cli.__version__}" in out and f"gpt2-core {gpt2_core.__version__}" in out


def test_generate_flags(capsys: pytest.CaptureFixture[str], tiny_model: Path) -> None:
    args = [
        "generate",
        "--model",
        str(tiny_model),
        "--prompt",
        "Hello",
        "--max-tokens",
        "8",
        "--device",
        "cpu",
    ]
    code, out, err = run(
        capsys, *args, "--num-seq", "3", "--seed", "1", "--temperature", "0.8", "--top-k", "20"
    )
    assert code == 0, err
    assert out.count("--- sample") == 3 and out.count("Hello") >= 3
    assert (
        run(capsys, *args, "--num-seq", "3", "--seed", "1", "--temperature", "0.8", "--top-k", "20")[1] == out
    )
    code, streamed, err = run(capsys, *args, "--stream", "--seed", "2", "--top-p", "0.9")
    assert code == 0, err
    code, plain, err = run(capsys, *args, "--seed", "2", "--top-p", "0.9")
    assert code == 0 and streamed == plain and plain.startswith("Hello")
    code, greedy, _ = run(capsys, *args, "--temperature", "0")
    assert code == 0 and greedy == run(capsys, *args, "--temperature", "0", "--seed", "5")[1]


def test_generate_routes_cpu_matmuls_as_asked(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpt2_core import cpu_matmul

    asked = []
    real = cpu_matmul.apply

    def spy(model, mode, **kw):  # noqa: ANN001, ANN003, ANN202
        asked.append((mode, kw))
        return real(model, mode, **kw)

    monkeypatch.setattr(cpu_matmul, "apply", spy)
    args = ["generate", "--model", str(tiny_model), "--max-tokens", "2", "--device", "cpu"]
    code, _, err = run(capsys, *args, "--cpu-matmul", "torch", "--num-seq", "3")
    assert code == 0 and err == "", err  # stdout and stderr stay the script's
    assert asked == [("torch", {"rows": 3})]  # three sequences decoded side by side
    code, _, err = run(capsys, *args, "--cpu-matmul", "mkl")
    assert code == 2 and "--cpu-matmul must be one of auto, onednn, torch" in err


def test_generate_quantize_int8(capsys: pytest.CaptureFixture[str], tiny_model: Path) -> None:
    args = ["generate", "--model", str(tiny_model), "--max-tokens", "2", "--device", "cpu", "-p", "Hi"]
    code, out, err = run(capsys, *args, "--quantize", "int8")
    assert code == 0 and out.startswith("Hi"), err
    code, _, err = run(capsys, *args, "--quantize", "int4")
    assert code == 2 and err == "error: --quantize must be one of none, int8, got 'int4'\n", err


def test_chat_quantize_int8(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from gpt2_core.quantize import Int8Linear

    loaded = loaded_llms(monkeypatch)
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n"))
    code, out, err = run(
        capsys, "chat", "--model", str(tiny_model), "--max-tokens", "2", "--quantize", "int8"
    )
    assert code == 0 and out.endswith("\n"), err
    assert isinstance(loaded[0].model.lm_head, Int8Linear) and "no nn.Linear" in err  # the route says why


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--model", "/nonexistent"], "/nonexistent"),
        (["generate", "--model", "MODEL", "--top-p", "2"], "--top-p"),
        (["generate", "--model", "MODEL", "--stream", "--num-seq", "2"], "--num-seq"),
        (["generate", "--model", "MODEL", "--device", "nonsense"], "--device"),
        (["generate", "--model", "MODEL", "--dtype", "int3"], "--dtype"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tiny_model: Path, args: list[str], message: str
) -> None:
    code, out, err = run(capsys, *[str(tiny_model) if a == "MODEL" else a for a in args])
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "generate", "--bogus")
    assert code == 2 and "--bogus" in err


def test_hook_implementations_match_the_specs() -> None:
    pm = get_plugin_manager()
    pm.check_pending()  # a misspelled @hookimpl name fails here


def test_every_hook_is_documented() -> None:
    specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "gpt2_spec")]
    names = {f.__name__ for f in specs}
    assert {"register_commands", "register_datasets", "register_loggers", "register_exporters"} <= names
    for f in specs:
        assert f.__doc__ and len(f.__doc__.strip()) > 20, f.__name__


class Registering:
    """A plugin object: provides a dataset and a command."""

    @hookimpl
    def register_datasets(self, register):  # noqa: ANN001, ANN201
        register("fixture-dataset", dict)

    @hookimpl
    def register_commands(self, app):  # noqa: ANN001, ANN201
        @app.command("fixture-cmd")
        def fixture_cmd() -> None:
            """A command from a test plugin."""
            print("fixture command ran")

        @app.command("fixture-diverge")
        def fixture_diverge() -> None:
            """A command whose run stops itself, as a diverged training run does."""
            raise RunStopped("5 non-finite steps in a row")


@pytest.fixture
def registered() -> Iterator[Registering]:
    pm = get_plugin_manager()
    plugin = Registering()
    pm.register(plugin, name="fixture-object")
    yield plugin
    pm.unregister(plugin)


def test_a_registered_plugin_provides_commands_and_registries(
    capsys: pytest.CaptureFixture[str], registered: Registering
) -> None:
    assert collect("datasets")["fixture-dataset"] is dict
    code, out, _ = run(capsys, "fixture-cmd")
    assert code == 0 and "fixture command ran" in out
    code, out, _ = run(capsys, "plugins")
    assert "fixture-object" in out
    assert "register_commands: fixture-cmd" in out and "register_datasets: fixture-dataset" in out
    get_plugin_manager().check_pending()


def test_a_stopped_run_exits_3_not_2(capsys: pytest.CaptureFixture[str], registered: Registering) -> None:
    code, _, err = run(capsys, "fixture-diverge")
    assert code == 3 and err.strip() == "error: 5 non-finite steps in a row"


def test_duplicate_names_are_refused(registered: Registering) -> None:
    class Again:
        @hookimpl
        def register_datasets(self, register):  # noqa: ANN001, ANN201
            register("fixture-dataset", list)

    pm = get_plugin_manager()
    again = Again()
    pm.register(again)
    try:
        with pytest.raises(ValueError, match="fixture-dataset"):
            collect("datasets")
    finally:
        pm.unregister(again)


def test_plugins_lists_ours_with_versions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    line = next(line for line in out.splitlines() if "gpt2-cli" in line)
    assert "0.1" in line and "register_commands: generate, chat, plugins" in line
    for name in ("gpt2-data", "gpt2-train", "gpt2-sft", "gpt2-export"):
        assert name in out


def test_load_plugins_allow_list(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT2_LOAD_PLUGINS", "gpt2-cli")
    get_plugin_manager.cache_clear()
    try:
        assert [name for name, _ in get_plugin_manager().list_name_plugin()] == ["gpt2-cli"]
        monkeypatch.setenv("GPT2_LOAD_PLUGINS", "")
        get_plugin_manager.cache_clear()
        assert get_plugin_manager().list_name_plugin() == []
    finally:
        monkeypatch.delenv("GPT2_LOAD_PLUGINS")
        get_plugin_manager.cache_clear()
