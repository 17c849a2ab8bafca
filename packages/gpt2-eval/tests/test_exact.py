"""Our lm-eval adapter against lm-eval's own Hugging Face model (``hf``) loading our Hugging Face export of the
same weights, on the same local tasks: equal per-example log-likelihoods (1e-4, fp32), equal acc and acc_norm,
equal greedy generations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gpt2_core import GPT, GPTConfig, get_preset
from gpt2_core.weights import save_model

from .tasks import QUESTIONS, write_tasks

pytestmark = pytest.mark.slow  # about a minute: lm-eval runs four tasks twice

TASKS = ["hellaswag_local", "piqa_local", "wikitext_local", "qa_local"]


def random_model() -> GPT:
    """A random nano GPT (context 64, padded vocabulary); biases and LayerNorms random too, and matrices of std
    0.1, which makes greedy texts vary from token to token (at GPT-2's 0.02 they repeat one word)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**get_preset("nano").to_dict(), "padded_vocab_size": 50304}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.normal_(0, 0.1 if name.endswith("bias") else 1.0)
            elif p.dim() == 2:
                p.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("lm_eval")
    ours = save_model(random_model(), root / "model")
    hf = root / "hf"
    cmd = [
        sys.executable,
        "-m",
        "gpt2_cli",
        "export",
        "--format",
        "hf",
        "--model",
        str(ours),
        "--out",
        str(hf),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return ours, hf, write_tasks(root)


def evaluate(model: object, tasks: Path, batch_size: int, **kwargs: object) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(
        model=model,
        tasks=TASKS,
        task_manager=TaskManager(include_path=str(tasks)),
        batch_size=batch_size,
        log_samples=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def both(setup: tuple[Path, Path, Path], monkeypatch_module: pytest.MonkeyPatch) -> tuple[dict, dict]:
    from gpt2_eval.harness import GPT2LM

    ours_dir, hf_dir, tasks = setup
    theirs = evaluate(
        "hf", tasks, 4, model_args={"pretrained": str(hf_dir), "dtype": "float32"}, device="cpu"
    )
    ours = evaluate(GPT2LM(str(ours_dir), batch_size=3), tasks, 3)
    return ours, theirs


@pytest.fixture(scope="module")
def monkeypatch_module() -> pytest.MonkeyPatch:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    mp.setenv("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    yield mp
    mp.undo()


def responses(result: dict, task: str) -> list:
    return [s["resps"] for s in sorted(result["samples"][task], key=lambda s: s["doc_id"])]


@pytest.mark.parametrize("task", ["hellaswag_local", "piqa_local"])
def test_multiple_choice_loglikelihoods_and_accuracies_equal_hf(both: tuple[dict, dict], task: str) -> None:
    ours, theirs = both
    a, b = responses(ours, task), responses(theirs, task)
    assert len(a) == len(b) > 0
    for doc_a, doc_b in zip(a, b):
        assert len(doc_a) == len(doc_b) > 1
        for (ll_a, greedy_a), (ll_b, greedy_b) in ((x[0], y[0]) for x, y in zip(doc_a, doc_b)):
            assert abs(float(ll_a) - float(ll_b)) < 1e-4, (task, ll_a, ll_b)
            assert greedy_a == greedy_b
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"][task][metric] == theirs["results"][task][metric], metric


def test_rolling_loglikelihoods_and_perplexities_equal_hf(both: tuple[dict, dict]) -> None:
    ours, theirs = both
    a, b = responses(ours, "wikitext_local"), responses(theirs, "wikitext_local")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert abs(float(x[0][0]) - float(y[0][0])) < 1e-4 * max(1.0, abs(float(y[0][0])) / 100)
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert ours["results"]["wikitext_local"][metric] == pytest.approx(
            theirs["results"]["wikitext_local"][metric], rel=1e-5
        )


def test_greedy_generations_equal_hf(both: tuple[dict, dict], setup: tuple[Path, Path, Path]) -> None:
    from gpt2_core.generation import generate
    from gpt2_core.model import GPT
    from gpt2_core.sampling import SamplingConfig
    from gpt2_core.tokenizer import Tokenizer

    ours, theirs = both
    a, b = responses(ours, "qa_local"), responses(theirs, "qa_local")
    assert a == b
    assert all(text[0] for text in a)
    # The stop strings are exercised: some text went on past one when generated without stops.
    model, cfg = (
        GPT.from_pretrained(setup[0]),
        SamplingConfig(max_new_tokens=12, temperature=0, stop_at_eot=False),
    )
    unstopped = [generate(model, Tokenizer(), f"Q: {q}\nA:", cfg)[0] for q, _ in QUESTIONS]
    assert [x[0][0] for x in a] != unstopped


@pytest.mark.parametrize("task", ["qa_long_local", "long_answer_local"])
def test_the_context_edge_is_refused_as_hf_refuses(
    setup: tuple[Path, Path, Path], monkeypatch_module: pytest.MonkeyPatch, task: str
) -> None:
    """max_gen_toks 100 or a 100-token continuation on a 64-token model: hf asserts, ours raises a UserError
    naming the task and the lengths (tests/test_cli.py: one line from the command)."""
    from gpt2_core.errors import UserError
    from gpt2_eval.harness import GPT2LM
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    ours_dir, hf_dir, tasks = setup
    manager = TaskManager(include_path=str(tasks))
    with pytest.raises(AssertionError, match="max_gen_toks|maximum sequence length|^$"):
        simple_evaluate(
            model="hf",
            model_args={"pretrained": str(hf_dir), "dtype": "float32"},
            tasks=[task],
            task_manager=manager,
            device="cpu",
            limit=2,
        )
    with pytest.raises(UserError, match=f"lm-eval task {task}: .*64-token context"):
        simple_evaluate(model=GPT2LM(str(ours_dir)), tasks=[task], task_manager=manager, limit=2)
