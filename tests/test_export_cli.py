"""``gpt2 export`` and ``gpt2 import`` end to end: the commands, third-party formats, chat models."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from cli_helpers import gpt2_here
from gpt2_core import GPT, get_preset
from gpt2_core.plugins import get_plugin_manager
from gpt2_core.weights import model_state_dict, save_model

PLUGINS = "gpt2-cli,gpt2-export"


@pytest.fixture
def gpt2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., tuple]]:
    """``gpt2(*args, plugins=...)`` runs the CLI in-process: (exit code, stdout, stderr)."""

    def run(*args: str, plugins: str = PLUGINS) -> tuple[int, str, str]:
        monkeypatch.setenv("GPT2_LOAD_PLUGINS", plugins)
        get_plugin_manager.cache_clear()
        return gpt2_here(capsys, *args)

    yield run
    get_plugin_manager.cache_clear()


def _model(path: Path, seed: int = 0, **overrides: object) -> GPT:
    torch.manual_seed(seed)
    model = GPT(get_preset("nano", **overrides))
    save_model(model, path, extra={"dataset": "tiny-shakespeare", "val_loss": 4.5})
    return model


def test_list_shows_builtin_formats(gpt2) -> None:
    code, out, _ = gpt2("export", "--list")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == ["gguf", "hf", "onnx"]


def test_third_party_exporter_is_found_and_used(gpt2, fixture_plugin, tmp_path: Path) -> None:
    env = fixture_plugin("gpt2-example-exporter")
    plugins = PLUGINS + ",gpt2-example-exporter"
    code, out, _ = gpt2("export", "--list", plugins=plugins)
    assert code == 0 and "npz   NumPy .npz of the weights (example plugin)" in out

    model = _model(tmp_path / "model")
    code, out, err = gpt2(
        "export", "--format", "npz", "--model", tmp_path / "model", "--out", tmp_path / "npz", "--dtype", "float16",
        plugins=plugins,
    )  # fmt: skip
    assert code == 0, err
    np = pytest.importorskip("numpy")
    weights = np.load(tmp_path / "npz" / "weights.npz")
    expected = model.transformer.h[0].mlp.c_fc.weight.detach().half().numpy()
    assert weights["transformer.h.0.mlp.c_fc.weight"].dtype == np.float16
    assert (weights["transformer.h.0.mlp.c_fc.weight"] == expected).all()

    # Discovered through its entry point by a fresh process too, as after `pip install`.
    env["GPT2_LOAD_PLUGINS"] = plugins
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2_cli", "export", "--list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "npz" in proc.stdout and "hf" in proc.stdout


def test_export_import_round_trip_through_the_cli(gpt2, tmp_path: Path) -> None:
    """A run directory's latest checkpoint exports to HF; importing that gives back the same tensors."""
    run = tmp_path / "run"
    model = _model(run / "step_000050")
    (run / "step_000050" / "trainer_state.pt").write_bytes(b"optimizer and step")
    (run / "latest").symlink_to("step_000050")

    code, out, err = gpt2("export", "--model", run, "--out", tmp_path / "hf")
    assert code == 0, err
    assert "tiny-shakespeare" in (tmp_path / "hf" / "README.md").read_text()
    code, _, err = gpt2("import", "--from-hf", tmp_path / "hf", "--out", tmp_path / "back")
    assert code == 0, err
    back = GPT.from_pretrained(tmp_path / "back")
    before, after = model_state_dict(model), model_state_dict(back)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["info"]["imported_from"]

    code, out, err = gpt2("generate", "--model", tmp_path / "back", "--prompt", "Hi", "--max-tokens", "3")
    assert code == 0, err


def test_gguf_export_is_one_file(gpt2, tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    _model(tmp_path / "m")
    code, out, err = gpt2(
        "export", "-f", "gguf", "--model", tmp_path / "m", "--out", tmp_path / "m.gguf", "--gguf-type", "q8_0"
    )
    assert code == 0, err
    assert out.strip() == f"exported {tmp_path / 'm'} as gguf (q8_0) to {tmp_path / 'm.gguf'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.gguf"]
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--out", "{tmp}/o"], "error: --model is required"),
        (
            ["export", "--model", "{tmp}/nope", "--out", "{tmp}/o"],
            "error: --model {tmp}/nope: no such directory",
        ),
        (
            ["export", "--format", "zip", "--model", "{tmp}/m", "--out", "{tmp}/o"],
            "error: --format 'zip': unknown export format; choose one of: gguf, hf, onnx",
        ),
        (
            ["export", "--model", "{tmp}/m", "--out", "{tmp}/full"],
            "error: --out {tmp}/full: directory is not empty",
        ),
        (["export", "--model", "{tmp}/m", "--out", "{tmp}/o", "--dtype", "int8"], "error: --dtype 'int8'"),
        (
            ["export", "--model", "{tmp}/m", "--out", "{tmp}/o", "--gguf-type", "q8_0"],
            "error: --gguf-type applies to --format gguf only, not 'hf'",
        ),
        (
            ["export", "-f", "gguf", "--model", "{tmp}/m", "--out", "{tmp}/o", "--gguf-type", "q4_k"],
            "error: --gguf-type 'q4_k': choose one of f32, f16, q8_0",
        ),
        (
            ["export", "-f", "gguf", "--model", "{tmp}/m", "--out", "{tmp}/full"],
            "error: --out {tmp}/full: is a directory; this format writes one file",
        ),
        (
            ["import", "--from-hf", "{tmp}/m", "--out", "{tmp}/o"],
            "error: --from-hf {tmp}/m: config.json is not a Hugging Face GPT-2 config",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2(gpt2, tmp_path: Path, args: list[str], message: str) -> None:
    _model(tmp_path / "m")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = gpt2(*(a.format(tmp=tmp_path) for a in args))
    assert code == 2
    assert err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_sft_chat_template_renders_the_ids_gpt2_chat_uses(tmp_path: Path) -> None:
    """transformers' apply_chat_template on the export equals gpt2-core's ChatTemplate.encode."""
    transformers = pytest.importorskip("transformers")
    from gpt2_core import chat_template as template
    from gpt2_export.exporters import run_export
    from gpt2_export.hf import HFExporter

    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi there! 你好 🤗\n  code: `x = 1`"},
        {"role": "assistant", "content": " Hello.\n\nHow can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ]
    for kind, padded in (("special", 50304), ("plain", 0)):
        torch.manual_seed(0)
        model = template.add_chat_template(GPT(get_preset("nano", padded_vocab_size=padded)), kind)
        src = save_model(model, tmp_path / kind)
        out = run_export("hf", src, tmp_path / f"{kind}-hf", registry={"hf": HFExporter})
        tok = transformers.AutoTokenizer.from_pretrained(out)
        ours = template.ChatTemplate.for_model(GPT.from_pretrained(src))
        for add_prompt in (False, True):
            theirs = tok.apply_chat_template(
                messages, add_generation_prompt=add_prompt, tokenize=True, return_dict=True
            )
            assert theirs["input_ids"] == ours.encode(messages, add_prompt), (kind, add_prompt)
        eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
        assert (ours.end_id in eos) if isinstance(eos, list) else eos == ours.end_id


def test_plugin_module_does_not_import_torch() -> None:
    code = "import sys, gpt2_export.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
