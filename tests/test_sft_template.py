"""The chat template: special tokens inside the vocabulary padding, ids equal to tokenizing the rendered text
(the Jinja copy renders the same text), the loss mask, and a saved model carrying it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gpt2_core.chat_template import ChatTemplate, add_chat_template, chat_config
from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_core.presets import get_preset
from gpt2_core.weights import save_model

CONV = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Hi there\n\n"},
    {"role": "assistant", "content": " Hello! ünï 你好"},
    {"role": "user", "content": "<|user|> is just text here"},
    {"role": "assistant", "content": "\nOK."},
]


def chat_model(padded: bool = True) -> GPT:
    torch.manual_seed(0)
    cfg = get_preset("nano")
    return add_chat_template(GPT(cfg.padded(64) if padded else cfg))


@pytest.mark.parametrize("padded", [True, False])
def test_ids_equal_tokenizing_the_rendered_text(padded: bool) -> None:
    template = ChatTemplate.for_model(chat_model(padded))
    assert template is not None
    msgs = CONV[:3]  # CONV[3] writes a marker as user text: plain text to us, a token to a text tokenizer
    for gen in (False, True):
        ids, mask = template.render(msgs, add_generation_prompt=gen)
        text = template.render_text(msgs, add_generation_prompt=gen)
        assert ids == template.tokenizer.encode(text, allow_special=True)
        assert len(mask) == len(ids)
    # The generation prompt is a prefix of the conversation with the reply.
    prompt = template.encode(CONV[:2], add_generation_prompt=True)
    assert template.encode(CONV[:3])[: len(prompt)] == prompt


def test_special_tokens_sit_in_the_padding_with_mean_embeddings() -> None:
    model = chat_model()
    cfg = model.config
    assert cfg.padded_vocab_size == 50304 and cfg.vocab_size == 50261
    assert sorted(cfg.special_tokens.values()) == list(range(50256, 50261))
    assert cfg.chat_template["kind"] == "special"
    wte = model.transformer.wte.weight.detach()
    mean = wte[:50257].mean(0)
    for idx in range(50257, 50261):
        assert torch.allclose(wte[idx], mean, atol=1e-3)
    assert not torch.equal(wte[50257], wte[50258])  # the markers can still be told apart


def test_an_untied_heads_new_rows_start_at_its_own_mean() -> None:
    torch.manual_seed(0)
    model = add_chat_template(GPT(get_preset("nano", tie_word_embeddings=False).padded(64)))
    assert model.config.vocab_size == 50261 and not model.config.tie_word_embeddings
    for table in (model.transformer.wte.weight.detach(), model.lm_head.weight.detach()):
        mean = table[:50257].mean(0)
        for idx in range(50257, 50261):
            assert torch.allclose(table[idx], mean, atol=1e-3)
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)


def test_model_without_room_gets_plain_text_markers() -> None:
    model = chat_model(padded=False)
    assert model.config.vocab_size == 50257
    assert model.config.chat_template["kind"] == "plain"
    template = ChatTemplate.for_model(model)
    assert "### Assistant:\n" in template.render_text(CONV[:3])
    assert template.end_id == 50256
    with pytest.raises(UserError, match="--template plain"):
        chat_config(get_preset("nano"), "special")


@pytest.mark.parametrize("padded", [True, False])
def test_only_assistant_tokens_are_targets(padded: bool) -> None:
    template = ChatTemplate.for_model(chat_model(padded))
    ids, mask = template.render(CONV)
    targets = template.tokenizer.decode(t for t, m in zip(ids, mask) if m)
    end = template.template["end"]
    assert targets == f" Hello! ünï 你好{end}\nOK.{end}"


def test_jinja_renders_the_same_text() -> None:
    jinja2 = pytest.importorskip("jinja2")
    for padded in (True, False):
        template = ChatTemplate.for_model(chat_model(padded))
        env = jinja2.Environment()
        for gen in (False, True):
            text = env.from_string(template.template["jinja"]).render(
                messages=CONV, add_generation_prompt=gen, raise_exception=None
            )
            assert text == template.render_text(CONV, add_generation_prompt=gen)


def test_bad_messages_are_user_errors() -> None:
    template = ChatTemplate.for_model(chat_model())
    with pytest.raises(UserError, match="message 0"):
        template.render([{"role": "robot", "content": "x"}])


def test_saved_model_carries_the_template(tmp_path: Path) -> None:
    model = chat_model()
    save_model(model, tmp_path / "m")
    loaded = GPT.from_pretrained(tmp_path / "m")
    assert loaded.config.chat_template == model.config.chat_template
    assert loaded.config.special_tokens == model.config.special_tokens
    # Adding it again keeps it as it is.
    assert add_chat_template(loaded).config.vocab_size == 50261
    assert ChatTemplate.for_model(GPT(get_preset("nano"))) is None


def ends_every_turn(model: GPT) -> GPT:
    """``model`` made to answer <|end|> whatever it reads: ln_f gives one vector, which only the end-of-turn
    marker's (tied) embedding matches."""
    template = ChatTemplate.for_model(model)
    assert template is not None
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wte.weight[template.end_id, 0] = 10.0
    return model


@pytest.mark.parametrize("stream", [False, True])
def test_generate_on_a_chat_model_stops_at_the_end_of_turn_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stream: bool
) -> None:
    """A plain completion of an SFT model printed its <|end|> markers raw; it stops at the first, as at
    <|endoftext|>, and an empty completion says why."""
    from cli_helpers import gpt2_here

    save_model(ends_every_turn(chat_model()), tmp_path / "sft")
    args = ["--model", str(tmp_path / "sft"), "--prompt", "Once", "--max-tokens", "5", "--temperature", "0"]
    code, out, err = gpt2_here(capsys, "generate", *args, *(["--stream"] if stream else []))
    assert code == 0, err
    assert out == "Once\n"
    assert "note: this is a chat model, and a completion ended at once with its end-of-turn marker" in err
