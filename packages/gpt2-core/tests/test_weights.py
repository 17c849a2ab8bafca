"""Weight files: our directory format round trip, Hugging Face import, and one-line errors for bad files."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from gpt2_core import GPT, UserError, get_preset
from gpt2_core.weights import without_tied_head
from safetensors.torch import load_file, save_file


def test_save_and_load_round_trip(nano: GPT, saved_nano: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sorted(p.name for p in saved_nano.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((saved_nano / "config.json").read_text())
    assert config["n_layer"] == 2 and config["special_tokens"] == {"<|endoftext|>": 50256}
    assert "lm_head.weight" not in load_file(saved_nano / "model.safetensors")  # tied: stored once

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loading path must not unpickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = GPT.from_pretrained(saved_nano)
    assert loaded.config == nano.config
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for (k, a), (_, b) in zip(nano.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    idx = torch.randint(0, 50257, (1, 9))
    torch.testing.assert_close(loaded(idx)[0], nano(idx)[0], rtol=0, atol=0)


def untied_nano() -> GPT:
    torch.manual_seed(0)
    return GPT(get_preset("nano", tie_word_embeddings=False).padded()).eval()


def test_untied_head_round_trip(tmp_path: Path) -> None:
    model = untied_nano()
    model.save_pretrained(tmp_path / "m")
    stored = load_file(tmp_path / "m" / "model.safetensors")
    assert torch.equal(stored["lm_head.weight"], model.lm_head.weight)  # the padding rows too
    assert json.loads((tmp_path / "m" / "config.json").read_text())["tie_word_embeddings"] is False
    loaded = GPT.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    assert loaded.lm_head.weight is not loaded.transformer.wte.weight
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    del stored["lm_head.weight"]  # a file without the head does not pass for an untied model
    save_file(stored, tmp_path / "m" / "model.safetensors")
    with pytest.raises(UserError, match=r"missing \['lm_head.weight'\]"):
        GPT.from_pretrained(tmp_path / "m")


def test_a_model_saved_before_tie_word_embeddings_loads_tied(saved_nano: Path) -> None:
    config = json.loads((saved_nano / "config.json").read_text())
    del config["tie_word_embeddings"]  # as every model directory written before the field was
    (saved_nano / "config.json").write_text(json.dumps(config))
    loaded = GPT.from_pretrained(saved_nano)
    assert loaded.config.tie_word_embeddings
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_padded_vocab_round_trip(tmp_path: Path) -> None:
    model = GPT(get_preset("nano").padded())
    model.save_pretrained(tmp_path / "m")
    loaded = GPT.from_pretrained(tmp_path / "m")
    assert (loaded.config.vocab_size, loaded.config.padded_vocab_size) == (50257, 50304)


@pytest.fixture(scope="module")
def hf_model():  # noqa: ANN201
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=50257,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # non-trivial biases and norms, so a wrong transpose or missed tensor shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def test_import_an_untied_hugging_face_model(tmp_path: Path) -> None:
    """A GPT2Config with tie_word_embeddings false: its lm_head.weight is in the file, and ours reads it."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=4, tie_word_embeddings=False
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        hf.lm_head.weight.normal_(0, 0.5)
    assert hf.lm_head.weight is not hf.transformer.wte.weight
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(tmp_path)
    assert not ours.config.tie_word_embeddings
    assert torch.equal(ours.lm_head.weight, hf.lm_head.weight)
    idx = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_import_hugging_face(hf_model, fmt: str, tmp_path: Path) -> None:  # noqa: ANN001
    hf_model.save_pretrained(tmp_path)
    if fmt == "bin":  # transformers >= 5 only writes safetensors: write the legacy file ourselves
        (tmp_path / "model.safetensors").unlink()
        torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    ours = GPT.from_pretrained(tmp_path)
    assert ours.config.n_layer == 2 and ours.config.block_size == 64
    idx = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        expected = hf_model(idx).logits
        got, _ = ours(idx, torch.zeros_like(idx))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def assert_one_line_naming(err: pytest.ExceptionInfo[UserError], path: Path) -> None:
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message


def test_missing_directory_and_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        GPT.from_pretrained(tmp_path / "nope")
    assert_one_line_naming(err, tmp_path / "nope")
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(UserError, match="not a directory") as err:
        GPT.from_pretrained(file)
    assert_one_line_naming(err, file)


def test_missing_config(saved_nano: Path) -> None:
    (saved_nano / "config.json").unlink()
    with pytest.raises(UserError) as err:
        GPT.from_pretrained(saved_nano)
    assert_one_line_naming(err, saved_nano / "config.json")


def test_malformed_config(saved_nano: Path) -> None:
    (saved_nano / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON") as err:
        GPT.from_pretrained(saved_nano)
    assert_one_line_naming(err, saved_nano / "config.json")
    (saved_nano / "config.json").write_text(json.dumps({"n_layer": 2, "colour": "blue"}))
    with pytest.raises(UserError, match="colour") as err:
        GPT.from_pretrained(saved_nano)
    assert_one_line_naming(err, saved_nano / "config.json")


def test_missing_weights(saved_nano: Path) -> None:
    (saved_nano / "model.safetensors").unlink()
    with pytest.raises(UserError) as err:
        GPT.from_pretrained(saved_nano)
    assert_one_line_naming(err, saved_nano / "model.safetensors")


def test_wrong_shapes(saved_nano: Path) -> None:
    config = json.loads((saved_nano / "config.json").read_text())
    (saved_nano / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    with pytest.raises(UserError, match="shape") as err:
        GPT.from_pretrained(saved_nano)
    assert_one_line_naming(err, saved_nano / "model.safetensors")
    (saved_nano / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(UserError, match="missing") as err:
        GPT.from_pretrained(saved_nano)
    assert_one_line_naming(err, saved_nano / "model.safetensors")


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_safetensors(saved_nano: Path, keep: float) -> None:
    weights = saved_nano / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UserError, match="truncated") as err:
        GPT.from_pretrained(saved_nano)
    assert_one_line_naming(err, weights)


def test_truncated_pytorch_bin(hf_model, tmp_path: Path) -> None:  # noqa: ANN001
    hf_model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        GPT.from_pretrained(tmp_path)
    assert_one_line_naming(err, tmp_path / "pytorch_model.bin")


def test_save_refuses_a_file(nano: GPT, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="not a directory"):
        nano.save_pretrained(tmp_path / "f")


def test_unsupported_hugging_face_variants_are_refused(hf_model, tmp_path: Path) -> None:  # noqa: ANN001
    hf_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "scale_attn_by_inverse_layer_idx": True}))
    with pytest.raises(UserError, match="scale_attn_by_inverse_layer_idx") as err:
        GPT.from_pretrained(tmp_path)
    assert_one_line_naming(err, tmp_path / "config.json")


def _save_sharded(model: GPT, out: Path) -> None:
    """``model`` as a sharded training checkpoint would hold it: config.json and a DCP directory with the
    weights under ``model.`` beside other state (written here by one process)."""
    import torch.distributed.checkpoint as dcp
    from gpt2_core.weights import SHARDED_DIR, save_config

    out.mkdir()
    save_config(model.config, out)
    weights = without_tied_head(model.state_dict(), model.config)
    state = {"model": weights, "optimizer": {"step": torch.tensor(3.0)}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=str(out / SHARDED_DIR), no_dist=True)


def test_sharded_checkpoint_loads_as_one_model(nano: GPT, tmp_path: Path) -> None:
    _save_sharded(nano, tmp_path / "ckpt")
    loaded = GPT.from_pretrained(tmp_path / "ckpt")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for (k, a), (_, b) in zip(nano.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_sharded_checkpoint_of_an_untied_model(tmp_path: Path) -> None:
    model = untied_nano()
    _save_sharded(model, tmp_path / "ckpt")
    loaded = GPT.from_pretrained(tmp_path / "ckpt")
    assert loaded.lm_head.weight is not loaded.transformer.wte.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_sharded_checkpoint_of_another_shape_is_refused(tmp_path: Path) -> None:
    _save_sharded(GPT(get_preset("nano")), tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    with pytest.raises(UserError, match=r"transformer\.wte\.weight has shape \(50257, 32\)"):
        GPT.from_pretrained(tmp_path / "ckpt")


def test_sharded_metadata_is_unpickled_only_as_dcp_metadata(nano: GPT, tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            return (print, ("unpickled",))

    _save_sharded(nano, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "sharded" / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UserError, match="builtins.print has no place in a checkpoint's metadata"):
        GPT.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "sharded" / ".metadata").write_bytes(b"\x80\x04")
    with pytest.raises(UserError, match="not a readable sharded checkpoint"):
        GPT.from_pretrained(tmp_path / "ckpt")
