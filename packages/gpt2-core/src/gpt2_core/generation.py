"""Sampling from a GPT: KV-cached decoding, greedy/temperature/top-k/top-p, stop conditions, streaming."""

from __future__ import annotations

import codecs
import contextlib
from collections.abc import Iterator, Sequence

import torch

from gpt2_core.errors import UserError
from gpt2_core.kv_cache import KVCache
from gpt2_core.model import GPT
from gpt2_core.sampling import SamplingConfig
from gpt2_core.tokenizer import EOT_ID, Tokenizer


def sample_next(
    logits: torch.Tensor, cfg: SamplingConfig, vocab_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pick one token per row of ``logits`` (B, V). Ids >= ``vocab_size`` (vocab padding) are never picked."""
    B = logits.size(0)
    return sample_rows(logits, vocab_size, [cfg] * B, generator=generator)


def sample_rows(
    logits: torch.Tensor,
    vocab_size: int,
    configs: Sequence[SamplingConfig],
    generators: Sequence[torch.Generator | None] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token for each row of ``logits`` (B, V) by that row's ``configs[b]`` (temperature, top_k,
    top_p), all rows at once: (B,) int64, on the logits' device, with no host sync.

    Sampling is ``torch.multinomial``'s own draw for one sample (probabilities divided by Exp(1) noise,
    then argmax: the same numbers), so row b draws its noise from ``generators[b]`` when given (a
    request's seed), the rows without one from ``generator`` in row order; with one ``generator`` for all
    rows this is exactly ``torch.multinomial(probs, 1, generator)``. Greedy rows (temperature 0) draw
    nothing. Ids >= ``vocab_size`` (vocab padding) are never picked.
    """
    logits = logits[:, :vocab_size].float()
    B, V = logits.shape
    greedy = [c.temperature == 0 for c in configs]
    if all(greedy):
        return logits.argmax(dim=-1)
    device = logits.device
    temperature = torch.tensor([c.temperature or 1.0 for c in configs], device=device)
    scaled = logits / temperature[:, None]
    ks = [c.top_k if 0 < c.top_k < V and not g else 0 for c, g in zip(configs, greedy)]
    if any(ks):
        kth = torch.topk(scaled, max(ks), dim=-1).values
        kth = kth.gather(1, torch.tensor([max(k - 1, 0) for k in ks], device=device)[:, None])
        kth = torch.where(torch.tensor(ks, device=device)[:, None] > 0, kth, float("-inf"))
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    nucleus = [c.top_p < 1.0 and not g for c, g in zip(configs, greedy)]
    if any(nucleus):
        sorted_logits, order = torch.sort(scaled, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        top_p = torch.tensor([c.top_p for c in configs], device=device)[:, None]
        # Drop a token when the tokens before it already reach top_p (the first one always stays).
        drop = (probs.cumsum(dim=-1) - probs >= top_p) & torch.tensor(nucleus, device=device)[:, None]
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(scaled, dim=-1)
    noise = torch.empty_like(probs)
    own = generators or [None] * B
    if all(g is None for g in own) and not any(greedy):
        noise.exponential_(1, generator=generator)
    else:
        shared = [b for b in range(B) if own[b] is None and not greedy[b]]
        if shared:  # one draw for the rows without a seed, in row order
            noise[shared] = torch.empty(len(shared), V, device=device).exponential_(1, generator=generator)
        for b in range(B):
            if own[b] is not None and not greedy[b]:
                noise[b].exponential_(1, generator=own[b])
    picked = (probs / noise).argmax(dim=-1)
    if any(greedy):
        picked = torch.where(torch.tensor(greedy, device=device), logits.argmax(dim=-1), picked)
    return picked


def _device_of(model: GPT) -> torch.device:
    return next(model.parameters()).device


def generate_ids(
    model: GPT,
    prompt_ids: Sequence[int],
    cfg: SamplingConfig,
    *,
    eot_id: int = EOT_ID,
    use_cache: bool = True,
    kv_cache: KVCache | None = None,
    stop_ids: Sequence[int] = (),
) -> Iterator[torch.Tensor]:
    """Yield the next token of each of ``cfg.num_return_sequences`` sequences, one (B,) tensor per step.

    Finished sequences (after <|endoftext|>) keep yielding ``eot_id``; the iterator ends when every
    sequence is finished or ``max_new_tokens`` is reached. When the text outgrows the context window the
    window slides: the cache is rebuilt from the most recent 7/8 of a window, so it rarely happens.

    ``kv_cache`` (a cache for the whole window, batch size B) lets a caller reuse keys and values across
    calls, as a chat does across turns: it must hold the first ``kv_cache.length`` ids of ``prompt_ids``,
    only the rest are fed, and afterwards it holds the prompt and every new token but the last (also when
    the caller stops early or is interrupted). ``stop_ids`` end a sequence as ``eot_id`` does (e.g. an
    end-of-turn token).
    """
    device = _device_of(model)
    window = model.config.block_size
    keep = window - max(1, window // 8)
    B = cfg.num_return_sequences
    generator = torch.Generator(device=device)
    if cfg.seed is not None:
        generator.manual_seed(cfg.seed)
    else:
        generator.seed()

    seq = torch.tensor(list(prompt_ids) or [eot_id], dtype=torch.long, device=device).expand(B, -1)
    cache = kv_cache
    if cache is not None:
        # Feed at least the last prompt token: its logits pick the first new token.
        cache.truncate(min(cache.length, seq.size(1) - 1))
    pending = seq if cache is None else seq[:, cache.length :]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    dtype = model.transformer.wte.weight.dtype
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(cfg.max_new_tokens):
                if not use_cache:
                    logits, _ = model(seq[:, -window:])
                elif cache is None or cache.length + pending.size(1) > window:
                    context = seq[:, -window:] if cache is None else seq[:, -keep:]
                    if cache is None:  # the prompt: every row is the same
                        cache = KVCache(model.config, B, device, dtype)
                        logits = _prefill_once(model, context, cache)
                    else:
                        cache.truncate(0)
                        logits, _ = model(context, kv_cache=cache)
                else:
                    logits, _ = model(pending, kv_cache=cache)
                nxt = sample_next(logits[:, -1, :], cfg, model.config.vocab_size, generator)
                nxt = torch.where(done, torch.full_like(nxt, eot_id), nxt)
                yield nxt
                if cfg.stop_at_eot:
                    done |= nxt == eot_id
                if len(stop):
                    done |= torch.isin(nxt, stop)
                if bool(done.all()):
                    return
                pending = nxt[:, None]
                seq = torch.cat([seq, pending], dim=1)
    finally:
        # An interrupt between two blocks leaves the cache as it was: its length counts whole passes only.
        model.train(was_training)


def _prefill_once(model: GPT, context: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Run identical rows of ``context`` once and copy the keys/values into every row of ``cache``.

    ``num_return_sequences`` samples share their prompt, so the prompt costs one row, not B.
    """
    B = context.size(0)
    if B == 1:
        return model(context, kv_cache=cache)[0]
    one = KVCache(model.config, 1, context.device, cache.k.dtype, max_len=context.size(1))
    logits, _ = model(context[:1], kv_cache=one)
    cache.broadcast_from(one)
    return logits.expand(B, -1, -1)


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    cfg: SamplingConfig,
    *,
    use_cache: bool = True,
    stop_ids: Sequence[int] = (),
) -> list[str]:
    """The completions (new text only) of ``prompt``, one per ``cfg.num_return_sequences``. ``stop_ids`` end
    a sequence as ``<|endoftext|>`` does (a chat model's end-of-turn marker), and are not part of the text."""
    B = cfg.num_return_sequences
    texts = [TextPieces(tokenizer, cfg.stop) for _ in range(B)]
    pieces: list[list[str]] = [[] for _ in range(B)]
    finished = [False] * B
    for step in generate_ids(
        model, tokenizer.encode(prompt), cfg, eot_id=tokenizer.eot_id, use_cache=use_cache, stop_ids=stop_ids
    ):
        for i, t in enumerate(step.tolist()):
            if finished[i]:
                continue
            if (cfg.stop_at_eot and t == tokenizer.eot_id) or t in stop_ids:
                finished[i] = True
                continue
            pieces[i].append(texts[i].add(t))
            finished[i] = texts[i].stopped
        if all(finished):
            break
    return ["".join(p) + text.finish() for p, text in zip(pieces, texts)]


class TextPieces:
    """New token ids of one sequence -> the text that is safe to show, piece by piece.

    Bytes of a character split across tokens are held back until the character is complete, and text
    that might be the start of a stop string is held back until it is known not to be one. Once a stop
    string appears, ``stopped`` is set and the text before it is the last piece.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.stopped = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self._hold = max(0, max((len(s) for s in self.stop), default=0) - 1)

    def add(self, token: int) -> str:
        """The text that ``token`` completes ("" while held back); nothing more once stopped."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(self.tokenizer.decode_bytes([token]))
        self._held, self.stopped = _cut_at_stop(self._held, self.stop)
        if self.stopped:
            out, self._held = self._held, ""
            return out
        # Emit all but a tail that could still grow into a stop string.
        safe = len(self._held) - self._hold
        if safe <= 0:
            return ""
        out, self._held = self._held[:safe], self._held[safe:]
        return out

    def finish(self) -> str:
        """What is still held back, at the end of the sequence."""
        if self.stopped:
            return ""
        out, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return out


def stream(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    cfg: SamplingConfig,
    *,
    prompt_ids: Sequence[int] | None = None,
    kv_cache: KVCache | None = None,
    stop_ids: Sequence[int] = (),
    generated: list[int] | None = None,
) -> Iterator[str]:
    """Yield the completion of ``prompt`` piece by piece as it is generated (one sequence).

    Pieces are whole characters, and text that might start a stop string is held back (``TextPieces``).
    ``kv_cache`` and ``stop_ids`` are as in :func:`generate_ids`; every new id (a stop id included) is
    appended to ``generated`` when given, so a caller reusing the cache knows which ids it holds.
    Closing this iterator early stops generation at once and leaves ``kv_cache`` consistent.
    """
    if cfg.num_return_sequences != 1:
        raise UserError("streaming produces one sequence: use --num-seq 1 with --stream")
    ids = tokenizer.encode(prompt) if prompt_ids is None else prompt_ids
    text = TextPieces(tokenizer, cfg.stop)
    steps = generate_ids(model, ids, cfg, eot_id=tokenizer.eot_id, kv_cache=kv_cache, stop_ids=stop_ids)
    with contextlib.closing(steps):  # runs generate_ids' clean-up now, not when the frame is collected
        for step in steps:
            t = int(step[0])
            if generated is not None:
                generated.append(t)
            if (cfg.stop_at_eot and t == tokenizer.eot_id) or t in stop_ids:
                break
            piece = text.add(t)
            if piece:
                yield piece
            if text.stopped:
                return
    tail = text.finish()
    if tail:
        yield tail
