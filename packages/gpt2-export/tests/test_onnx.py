"""The ONNX export, run in onnxruntime: logits equal ours with and without the key/value cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from gpt2_core import GPT
from gpt2_core.errors import UserError
from gpt2_core.weights import save_model
from gpt2_export.exporters import run_export
from gpt2_export.onnx_export import ONNX_FILE, OnnxExporter, io_names

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
np = pytest.importorskip("numpy")

REGISTRY = {"onnx": OnnxExporter}


def _session(out: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])


def _empty_past(model: GPT, batch: int, dtype: type = np.float32) -> dict[str, np.ndarray]:
    cfg = model.config
    shape = (batch, cfg.n_head, 0, cfg.n_embd // cfg.n_head)
    return {name: np.zeros(shape, dtype) for name in io_names(cfg.n_layer)[0][1:]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[GPT, Path]:
    make_model = request.getfixturevalue("make_model")
    root = tmp_path_factory.mktemp("onnx")
    src = save_model(make_model(padded_vocab_size=50304), root / "model")
    return GPT.from_pretrained(src).eval(), run_export("onnx", src, root / "onnx", registry=REGISTRY)


def test_onnxruntime_logits_match_ours(exported: tuple[GPT, Path]) -> None:
    model, out = exported
    session = _session(out)
    assert [i.name for i in session.get_inputs()] == io_names(2)[0]
    ids = torch.randint(0, 50257, (3, 17), generator=torch.Generator().manual_seed(1))
    logits, *presents = session.run(None, {"input_ids": ids.numpy(), **_empty_past(model, 3)})
    with torch.no_grad():
        mine = model(ids, targets=ids)[0][..., :50257].numpy()
    assert logits.shape == (3, 17, 50257)
    np.testing.assert_allclose(logits, mine, atol=1e-4, rtol=0)
    assert presents[0].shape == (3, 2, 17, 16)


def test_onnxruntime_kv_cache_decoding(exported: tuple[GPT, Path]) -> None:
    """Prefill 10 tokens, then feed one at a time: each step's logits equal the full forward's."""
    model, out = exported
    session = _session(out)
    names = io_names(2)[0][1:]
    ids = torch.randint(0, 50257, (1, 14), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mine = model(ids, targets=ids)[0][..., :50257].numpy()
    logits, *past = session.run(None, {"input_ids": ids[:, :10].numpy(), **_empty_past(model, 1)})
    np.testing.assert_allclose(logits, mine[:, :10], atol=1e-4, rtol=0)
    for t in range(10, 14):
        logits, *past = session.run(None, {"input_ids": ids[:, t : t + 1].numpy(), **dict(zip(names, past))})
        np.testing.assert_allclose(logits[:, 0], mine[:, t], atol=1e-4, rtol=0)
    assert past[0].shape[2] == 14


def test_onnx_export_writes_tokenizer_and_readme(exported: tuple[GPT, Path]) -> None:
    _, out = exported
    names = {p.name for p in out.iterdir()}
    assert {ONNX_FILE, "config.json", "tokenizer.json", "README.md"} <= names
    assert "`past.{i}.value`" in (out / "README.md").read_text()


def test_an_untied_head_is_the_graphs_head(make_model, tmp_path: Path) -> None:
    """The graph's head is the untied head's real rows (a tied model's copies the embedding's)."""
    import onnx

    model = make_model(padded_vocab_size=50304, tie_word_embeddings=False)
    out = run_export("onnx", save_model(model, tmp_path / "model"), tmp_path / "onnx", registry=REGISTRY)
    ids = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(5))
    logits = _session(out).run(None, {"input_ids": ids.numpy(), **_empty_past(model, 2)})[0]
    with torch.no_grad():
        mine = model(ids, targets=ids)[0][..., :50257].numpy()
    np.testing.assert_allclose(logits, mine, atol=1e-4, rtol=0)
    shapes = [tuple(i.dims) for i in onnx.load(str(out / ONNX_FILE)).graph.initializer]
    assert shapes.count((32, 50257)) == 1 and shapes.count((50304, 32)) == 1  # the head; the embedding


def test_bfloat16_is_refused(model_dir, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--dtype 'bfloat16'.*float32, float16"):
        run_export("onnx", model_dir(), tmp_path / "out", dtype="bfloat16", registry=REGISTRY)


def test_missing_onnx_is_a_user_error(model_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` fail
    with pytest.raises(UserError, match=r"needs onnxscript: pip install 'gpt2-export\[onnx\]'"):
        run_export("onnx", model_dir(), tmp_path / "out", registry=REGISTRY)
    assert not (tmp_path / "out").exists()


def test_float16_export_runs(make_model, tmp_path: Path) -> None:
    model = make_model()
    src = save_model(model, tmp_path / "model")
    out = run_export("onnx", src, tmp_path / "onnx16", dtype="float16", registry=REGISTRY)
    ids = torch.randint(0, 50257, (1, 8), generator=torch.Generator().manual_seed(3))
    (logits, *_) = _session(out).run(None, {"input_ids": ids.numpy(), **_empty_past(model, 1, np.float16)})
    with torch.no_grad():
        mine = model(ids, targets=ids)[0].numpy()
    assert logits.dtype == np.float16
    np.testing.assert_allclose(logits.astype(np.float32), mine, atol=5e-2, rtol=0)


def test_quantize_dynamic_quantizes_the_head(exported: tuple[GPT, Path], tmp_path: Path) -> None:
    """Plain ``quantize_dynamic`` (no ``quant_pre_process``) turns the head's MatMul into an integer one: the
    head is an initializer of its own, not the tied embedding through a Transpose. Its logits stay close."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    model, out = exported
    quantized = tmp_path / "model.int8.onnx"
    quantize_dynamic(str(out / ONNX_FILE), str(quantized))
    graph = onnx.load(str(quantized)).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    head = (model.config.n_embd, model.config.vocab_size)
    readers = {n.op_type for n in graph.node for i in n.input if shapes.get(i) == head}
    assert readers == {"MatMulInteger"}, readers  # the only (n_embd, vocab) weight, read as int8
    ids = torch.randint(0, 50257, (2, 17), generator=torch.Generator().manual_seed(4))
    session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input_ids": ids.numpy(), **_empty_past(model, 2)})[0]
    with torch.no_grad():
        mine = model(ids, targets=ids)[0][..., :50257].numpy()
    err = np.abs(logits - mine).max() / mine.std()
    agree = (logits.argmax(-1) == mine.argmax(-1)).mean()
    print(f"int8 logits: max error {err:.3f} of their std, top-1 agreement {agree:.3f}")
    assert err < 0.2 and agree >= 0.9, (err, agree)
