"""The shared export machinery: finding the model, staging the output, the registry, the weight mapping."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from gpt2_core.errors import UserError
from gpt2_core.weights import (
    config_from_hf,
    config_to_hf,
    model_state_dict,
    state_dict_from_hf,
    state_dict_to_hf,
)
from gpt2_export.exporters import (
    Exporter,
    ExportJob,
    describe,
    resolve_model_dir,
    run_export,
    staged_output,
)
from gpt2_export.hf import HFExporter
from gpt2_export.onnx_export import OnnxExporter


class Recorder:
    """A minimal exporter: records the job, writes one file, fails on request."""

    description = "records what it is given"
    dtypes = ("float32",)
    jobs: list[ExportJob] = []
    fail = False

    def export(self, job: ExportJob) -> None:
        Recorder.jobs.append(job)
        (job.out / "written.txt").write_text("partial")
        if Recorder.fail:
            raise RuntimeError("disk full")


@pytest.fixture
def recorder() -> dict[str, type]:
    Recorder.jobs, Recorder.fail = [], False
    return {"rec": Recorder}


def test_builtin_exporters_follow_the_protocol() -> None:
    for factory in (HFExporter, OnnxExporter, Recorder):
        assert isinstance(factory(), Exporter)
        assert describe(factory)
        assert set(factory.dtypes) <= {"float32", "bfloat16", "float16"}


def test_resolve_model_checkpoint_and_run_dirs(model_dir, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ckpt = model_dir("run/step_000100")
    (ckpt / "optimizer.pt").write_bytes(b"trainer state")  # a checkpoint is a model dir plus state
    assert resolve_model_dir(ckpt) == ckpt
    (run / "latest").symlink_to("step_000100")
    assert resolve_model_dir(run).resolve() == ckpt.resolve()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such directory"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "not a directory"),
        (lambda p: p, "no config.json"),
    ],
)
def test_resolve_refuses_what_is_not_a_model(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(UserError, match=f"--model .*{message}"):
        resolve_model_dir(make(tmp_path))


def test_run_export_hands_the_exporter_a_staging_dir(model_dir, tmp_path: Path, recorder) -> None:
    src = model_dir(info={"dataset": "fineweb-edu", "val_loss": 3.1})
    out = run_export("rec", src, tmp_path / "out", registry=recorder)
    (job,) = Recorder.jobs
    assert job.out != out and not job.out.exists()  # staged, then renamed into place
    assert (out / "written.txt").read_text() == "partial"
    assert job.info == {"dataset": "fineweb-edu", "val_loss": 3.1}
    assert job.model.config.n_layer == 2 and not job.model.training
    assert job.torch_dtype == torch.float32


def test_failed_export_leaves_nothing_behind(model_dir, tmp_path: Path, recorder) -> None:
    src = model_dir()
    Recorder.fail = True
    with pytest.raises(RuntimeError, match="disk full"):
        run_export("rec", src, tmp_path / "out", registry=recorder)
    assert not (tmp_path / "out").exists()
    # An existing export replaced with --force survives a failed attempt untouched.
    Recorder.fail = False
    run_export("rec", src, tmp_path / "out", registry=recorder)
    (tmp_path / "out" / "written.txt").write_text("previous")
    Recorder.fail = True
    with pytest.raises(RuntimeError):
        run_export("rec", src, tmp_path / "out", force=True, registry=recorder)
    assert (tmp_path / "out" / "written.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]


def test_out_must_be_empty_unless_force(model_dir, tmp_path: Path, recorder) -> None:
    src = model_dir()
    out = tmp_path / "out"
    out.mkdir()
    run_export("rec", src, out, registry=recorder)  # empty: fine
    with pytest.raises(UserError, match="--out .*not empty; use --force"):
        run_export("rec", src, out, registry=recorder)
    (out / "stale.txt").write_text("old")
    run_export("rec", src, out, force=True, registry=recorder)
    assert sorted(os.listdir(out)) == ["written.txt"]
    with pytest.raises(UserError, match="--out .*would overwrite the model"):
        run_export("rec", src, src, force=True, registry=recorder)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--out .*not a directory"):
        run_export("rec", src, tmp_path / "file", registry=recorder)


def test_unknown_format_and_dtype_are_user_errors(model_dir, tmp_path: Path, recorder) -> None:
    with pytest.raises(UserError, match="--format 'nope'.*choose one of: rec"):
        run_export("nope", model_dir(), tmp_path / "out", registry=recorder)
    with pytest.raises(UserError, match="--dtype 'float16'.*float32"):
        run_export("rec", model_dir(), tmp_path / "out", dtype="float16", registry=recorder)


def test_staged_output_makes_ordinary_files(tmp_path: Path) -> None:
    with staged_output(tmp_path / "out") as staging:
        (staging / "a").write_text("x")
        os.chmod(staging / "a", 0o600)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out" / "a").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(("bias", "tied"), [(True, True), (False, True), (True, False)])
def test_state_dict_to_hf_inverts_from_hf(make_model, bias: bool, tied: bool) -> None:
    model = make_model(bias=bias, padded_vocab_size=50304, tie_word_embeddings=tied)
    ours = model_state_dict(model)
    hf = state_dict_to_hf(ours, model.config)
    assert hf["transformer.wte.weight"].shape == (50257, 32)  # padding rows cut
    assert hf["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)
    assert ("lm_head.weight" in hf) == (not tied)  # a tied head is wte; an untied one, padding cut too
    assert tied or hf["lm_head.weight"].shape == (50257, 32)
    back = state_dict_from_hf(hf)
    for key, value in ours.items():
        expected = value[:50257] if key in ("transformer.wte.weight", "lm_head.weight") else value
        assert torch.equal(back[key], expected), key
    extra = set(back) - set(ours)
    assert bool(extra) == (not bias)
    assert all(not back[k].any() for k in extra)  # a bias-free model gets zero biases


def test_config_to_hf_inverts_from_hf(make_model) -> None:
    config = make_model(padded_vocab_size=50304).config
    hf = config_to_hf(config, "bfloat16")
    json.dumps(hf)
    back = config_from_hf(hf)
    assert (back.n_layer, back.n_head, back.n_embd, back.block_size, back.vocab_size) == (2, 2, 32, 64, 50257)
    assert hf["torch_dtype"] == "bfloat16"
    assert back.tie_word_embeddings and hf["tie_word_embeddings"] is True
    untied = make_model(tie_word_embeddings=False).config
    assert config_to_hf(untied)["tie_word_embeddings"] is False
    assert not config_from_hf(config_to_hf(untied)).tie_word_embeddings


def test_a_hugging_face_dir_is_a_source_too(model_dir, tmp_path: Path, recorder) -> None:
    hf = run_export("hf", model_dir(info={"step": 5}), tmp_path / "hf", registry={"hf": HFExporter})
    run_export("rec", hf, tmp_path / "again", registry=recorder)
    (job,) = Recorder.jobs
    assert job.info == {} and job.model.config.n_layer == 2
