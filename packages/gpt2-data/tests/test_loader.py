import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gpt2_core.errors import UserError
from gpt2_data.loader import ShardLoader
from gpt2_data.shards import open_shard, write_shard

B, T = 2, 16


def batches(loader: ShardLoader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [tuple(t.clone() for t in loader.next_batch()) for _ in range(n)]


def test_batch_shape_and_shift(prepared: Path) -> None:
    loader = ShardLoader(prepared, "train", batch_size=B, seq_len=T, shuffle=False)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
    manifest = json.loads((prepared / "manifest.json").read_text())
    first = open_shard(prepared / next(s["name"] for s in manifest["shards"] if s["split"] == "train"))
    stream = torch.from_numpy(first[: B * T + 1].astype(np.int64))
    assert torch.equal(x.flatten(), stream[:-1]) and torch.equal(y.flatten(), stream[1:])
    assert loader.tokens_seen == B * T and loader.epoch == 0


def test_ranks_are_disjoint_and_cover_the_stream(prepared: Path) -> None:
    ranks = [ShardLoader(prepared, batch_size=B, seq_len=T, rank=r, world_size=2, seed=3) for r in range(2)]
    single = ShardLoader(prepared, batch_size=2 * B, seq_len=T, seed=3)  # same step, one rank
    for _ in range(20):
        x0, _ = ranks[0].next_batch()
        x1, _ = ranks[1].next_batch()
        xs, _ = single.next_batch()
        assert torch.equal(torch.cat([x0.flatten(), x1.flatten()]), xs.flatten())


def test_epochs_reshuffle_shard_order(prepared: Path) -> None:
    loader = ShardLoader(prepared, batch_size=B, seq_len=T, seed=1)
    orders = []
    while loader.epoch < 4:
        if not orders or orders[-1] != loader.order:
            orders.append(list(loader.order))
        loader.next_batch()
    assert loader.epoch == 4 and len({tuple(o) for o in orders}) > 1
    assert loader.tokens_seen > 0
    again = ShardLoader(prepared, batch_size=B, seq_len=T, seed=1)
    assert again.order == orders[0]
    other_seed = ShardLoader(prepared, batch_size=B, seq_len=T, seed=2)
    assert [other_seed._order(e) for e in range(4)] != [again._order(e) for e in range(4)]


@pytest.mark.parametrize("windows", [False, True], ids=["shards", "windows"])
def test_resume_two_ranks_bit_for_bit(prepared: Path, windows: bool) -> None:
    def make(rank: int) -> ShardLoader:
        return ShardLoader(
            prepared,
            batch_size=B,
            seq_len=T,
            rank=rank,
            world_size=2,
            seed=7,
            shuffle_windows=windows,
            window_tokens=64,
        )

    ranks = [make(0), make(1)]
    for loader in ranks:  # run into the second epoch so epoch and shuffled order matter, and stop mid-shard
        while loader.epoch < 1 or loader.shard_index < 2:
            loader.next_batch()
        for _ in range(5):
            loader.next_batch()
        assert loader.offset > 0
    states = [json.loads(json.dumps(loader.state_dict())) for loader in ranks]  # as a checkpoint would
    expected = [batches(loader, 40) for loader in ranks]
    resumed = [make(0), make(1)]
    for loader, state in zip(resumed, states):
        loader.load_state_dict(state)
    for r, loader in enumerate(resumed):
        got = batches(loader, 40)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected[r]))
        assert loader.epoch == ranks[r].epoch and loader.tokens_seen == ranks[r].tokens_seen
    # The position is shared: rank 0's state resumes rank 1 just as well, and ranks never read the same batch.
    swapped = make(1)
    swapped.load_state_dict(states[0])
    assert torch.equal(swapped.next_batch()[0], expected[1][0][0])
    assert not torch.equal(expected[0][0][0], expected[1][0][0])


def window_loader(prepared: Path, seed: int = 3, **kwargs) -> ShardLoader:
    return ShardLoader(
        prepared, batch_size=B, seq_len=T, seed=seed, shuffle_windows=True, window_tokens=64, **kwargs
    )


def test_window_shuffle_permutes_whole_documents(prepared: Path) -> None:
    loader = window_loader(prepared)
    streams = {}
    for shard, path in enumerate(loader.paths):
        tokens = open_shard(path)
        w = loader.windows(shard, 0)
        in_file_order = w[np.argsort(w[:, 0])]
        # The windows tile the shard: the same tokens, as a multiset of windows, as the unshuffled stream.
        assert in_file_order[0, 0] == 0 and in_file_order[-1, 1] == len(tokens)
        assert np.array_equal(in_file_order[1:, 0], in_file_order[:-1, 1])
        assert all(tokens[start] == 50256 for start in in_file_order[1:, 0])  # each starts a document
        assert all(end - start >= 64 for start, end in in_file_order[:-1])
        assert len(w) > 10 and not np.array_equal(w, in_file_order)  # and they are read in another order
        streams[shard] = np.concatenate([tokens[a:b] for a, b in w]).astype(np.int64)
    # next_batch reads exactly that permuted stream, batch after batch, across window boundaries.
    step = B * T
    while True:
        x, y = loader.next_batch()
        if loader.epoch == 1:  # that batch began the next epoch, in its own window order
            break
        shard, offset = loader.order[loader.shard_index], loader.offset - step
        expected = torch.from_numpy(streams[shard][offset : offset + step + 1])
        assert torch.equal(x.flatten(), expected[:-1]) and torch.equal(y.flatten(), expected[1:])


def test_window_order_is_seeded_by_seed_epoch_and_shard(prepared: Path) -> None:
    a, b, other = window_loader(prepared), window_loader(prepared), window_loader(prepared, seed=4)
    assert np.array_equal(a.windows(0, 0), b.windows(0, 0))  # deterministic
    assert np.array_equal(
        np.sort(a.windows(0, 0), axis=0), np.sort(a.windows(0, 1), axis=0)
    )  # same windows ...
    assert not np.array_equal(a.windows(0, 0), a.windows(0, 1))  # ... in another order each epoch
    assert not np.array_equal(a.windows(0, 0), other.windows(0, 0))
    first = batches(a, 30)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(first, batches(b, 30)))
    plain = batches(ShardLoader(prepared, batch_size=B, seq_len=T, seed=3), 30)
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(first, plain))
    # Ranks still split one stream: two ranks read what one rank with twice the batch reads.
    ranks = [window_loader(prepared, rank=r, world_size=2) for r in range(2)]
    single = ShardLoader(
        prepared, batch_size=2 * B, seq_len=T, seed=3, shuffle_windows=True, window_tokens=64
    )
    for _ in range(40):
        pair = torch.cat([ranks[0].next_batch()[0].flatten(), ranks[1].next_batch()[0].flatten()])
        assert torch.equal(pair, single.next_batch()[0].flatten())


def test_window_settings_must_match_on_resume(prepared: Path) -> None:
    state = window_loader(prepared).state_dict()
    with pytest.raises(UserError, match=r"shuffle_windows True \(now False\)"):
        ShardLoader(prepared, batch_size=B, seq_len=T, seed=3).load_state_dict(state)
    with pytest.raises(UserError, match=r"window_tokens 64 \(now 128\)"):
        ShardLoader(
            prepared, batch_size=B, seq_len=T, seed=3, shuffle_windows=True, window_tokens=128
        ).load_state_dict(state)
    with pytest.raises(UserError, match="window tokens must be >= 1"):
        ShardLoader(prepared, batch_size=B, seq_len=T, shuffle_windows=True, window_tokens=0)
    old = ShardLoader(prepared, batch_size=B, seq_len=T).state_dict()
    del old["shuffle_windows"], old["window_tokens"]  # a state saved before window shuffling existed
    ShardLoader(prepared, batch_size=B, seq_len=T).load_state_dict(old)


def test_resume_with_other_world_size_resplits(prepared: Path) -> None:
    two = [ShardLoader(prepared, batch_size=B, seq_len=T, rank=r, world_size=2, seed=5) for r in range(2)]
    for _ in range(3):
        for loader in two:
            loader.next_batch()
    one = ShardLoader(prepared, batch_size=2 * B, seq_len=T, seed=5)
    one.load_state_dict(two[1].state_dict())
    x0, x1 = two[0].next_batch()[0], two[1].next_batch()[0]
    assert torch.equal(one.next_batch()[0].flatten(), torch.cat([x0.flatten(), x1.flatten()]))


def test_reset_repeats_val(prepared: Path) -> None:
    val = ShardLoader(prepared, "val", batch_size=B, seq_len=T, shuffle=False)
    first = batches(val, 5)
    val.reset()
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, batches(val, 5)))


def test_llmc_directory_without_manifest(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"):
        write_shard(tmp_path / name, rng.integers(0, 50257, 5000, dtype=np.uint16))
    loader = ShardLoader(tmp_path, "train", batch_size=B, seq_len=T, shuffle=False)
    assert loader.names == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert ShardLoader(tmp_path, "val", batch_size=B, seq_len=T).names == ["fineweb_val_000000.bin"]
    with pytest.raises(UserError, match="no manifest.json"):
        ShardLoader(tmp_path, batch_size=B, seq_len=T, verify=True)


def test_errors(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing: data directory not found"):
        ShardLoader(tmp_path / "missing", batch_size=B, seq_len=T)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: no train shards"):
        ShardLoader(tmp_path / "empty", batch_size=B, seq_len=T)
    with pytest.raises(UserError, match="fewer than one step"):
        ShardLoader(prepared, batch_size=64, seq_len=1024)
    with pytest.raises(UserError, match="rank 2 is outside world size 2"):
        ShardLoader(prepared, rank=2, world_size=2)
    manifest = json.loads((prepared / "manifest.json").read_text())
    victim = prepared / next(s["name"] for s in manifest["shards"] if s["split"] == "train")
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"{victim.name}: sha256 mismatch"):
        ShardLoader(prepared, batch_size=B, seq_len=T, verify=True)
    loader = ShardLoader(prepared, batch_size=B, seq_len=T)
    state = loader.state_dict()
    state["shards"] = ["other.bin"]
    with pytest.raises(UserError, match="shards differ"):
        loader.load_state_dict(state)


def test_bad_token_id_names_the_file(tmp_path: Path) -> None:
    write_shard(tmp_path / "x_train_0.bin", np.full(100, 65000, dtype=np.uint16))
    loader = ShardLoader(tmp_path, batch_size=1, seq_len=8)
    with pytest.raises(UserError, match=r"x_train_0\.bin: token id 65000 >= vocab size 50257"):
        loader.next_batch()


def aligned_loader(prepared: Path, rank: int = 0, world_size: int = 1, **kwargs) -> ShardLoader:
    return ShardLoader(
        prepared, batch_size=B, seq_len=T, rank=rank, world_size=world_size, align_documents=True, **kwargs
    )


def expected_rows(stream: np.ndarray, offset: int, n: int) -> tuple[list[int], int]:
    """Independently: n rows, each at the first document start at or after the last one's start + T."""
    rows, pos = [], offset
    for _ in range(n):
        while stream[pos] != 50256:
            pos += 1
        rows.append(pos)
        pos += T
    return rows, pos


@pytest.mark.parametrize("windows", [False, True], ids=["shards", "windows"])
def test_aligned_rows_start_at_documents_and_skip_the_cut_rest(prepared: Path, windows: bool) -> None:
    extra = dict(shuffle_windows=True, window_tokens=64) if windows else {}
    loader = aligned_loader(prepared, seed=3, **extra)
    plain = ShardLoader(prepared, batch_size=B, seq_len=T, seed=3, **extra)
    skipped = 0
    while loader.epoch == 0:
        shard, before = loader.order[loader.shard_index], loader.offset
        x, y = loader.next_batch()
        if loader.epoch:
            break
        if loader.order[loader.shard_index] != shard:
            shard, before = loader.order[loader.shard_index], 0
        # The stream is the unaligned loader's (windows in the same order), read from document starts only.
        stream = plain._read(shard, 0, plain.lengths[shard]).astype(np.int64)
        rows, after = expected_rows(stream, before, B)
        assert loader.offset == after
        for r, start in enumerate(rows):
            row = torch.from_numpy(stream[start : start + T + 1])
            assert torch.equal(x[r], row[:-1]) and torch.equal(y[r], row[1:])
        skipped += rows[0] - before + sum(b - a - T for a, b in zip(rows, rows[1:]))
    assert (x[:, 0] == 50256).all() and x.is_contiguous() and y.is_contiguous()
    assert skipped > 0 and loader.batches_per_epoch() is None


def test_aligned_ranks_split_one_step_and_resume_across_world_sizes(prepared: Path) -> None:
    ranks = [aligned_loader(prepared, rank=r, world_size=2, seed=5) for r in range(2)]
    single = ShardLoader(prepared, batch_size=2 * B, seq_len=T, seed=5, align_documents=True)
    for _ in range(30):
        pair = torch.cat([ranks[0].next_batch()[0], ranks[1].next_batch()[0]])
        assert torch.equal(pair, single.next_batch()[0])
    # A checkpoint taken mid-epoch resumes bit for bit on two ranks, and re-splits onto one.
    while ranks[0].epoch < 1 or ranks[0].shard_index < 1:
        for loader in ranks:
            loader.next_batch()
    state = json.loads(json.dumps(ranks[1].state_dict()))
    expected = [batches(loader, 25) for loader in ranks]
    resumed = [aligned_loader(prepared, rank=r, world_size=2, seed=5) for r in range(2)]
    for r, loader in enumerate(resumed):
        loader.load_state_dict(state)
        assert all(torch.equal(a[1], b[1]) for a, b in zip(batches(loader, 25), expected[r]))
    one = ShardLoader(prepared, batch_size=2 * B, seq_len=T, seed=5, align_documents=True)
    one.load_state_dict(state)
    assert torch.equal(one.next_batch()[0], torch.cat([expected[0][0][0], expected[1][0][0]]))


def test_aligned_setting_must_match_on_resume(prepared: Path) -> None:
    with pytest.raises(UserError, match=r"align_documents True \(now False\)"):
        ShardLoader(prepared, batch_size=B, seq_len=T).load_state_dict(aligned_loader(prepared).state_dict())
    old = ShardLoader(prepared, batch_size=B, seq_len=T).state_dict()
    del old["align_documents"]  # a state saved before alignment existed resumes unaligned
    ShardLoader(prepared, batch_size=B, seq_len=T).load_state_dict(old)
    with pytest.raises(UserError, match="align_documents False"):
        aligned_loader(prepared).load_state_dict(old)
    # A step that fills the largest shard unaligned cannot fit once it starts at documents.
    most = (max(ShardLoader(prepared, batch_size=B, seq_len=T).lengths) - 1) // T
    with pytest.raises(UserError, match=f"no train shard holds a step of {most} sequences of {T} tokens"):
        ShardLoader(prepared, batch_size=most, seq_len=T, align_documents=True).next_batch()


def test_aligned_reading_tries_every_shard_from_its_start(tmp_path: Path) -> None:
    # Only the big shard holds an aligned step; part-way through it, the next epoch may order it after the small
    # one: the loader must still come back to its start rather than give up.
    big = np.tile(np.r_[50256, np.arange(1, 40)], 10).astype(np.uint16)  # a document every 40 tokens
    write_shard(tmp_path / "data_train_000000.bin", big)
    write_shard(tmp_path / "data_train_000001.bin", np.arange(1, 101, dtype=np.uint16))  # no document start
    for seed in range(4):
        loader = ShardLoader(tmp_path, "train", batch_size=4, seq_len=16, seed=seed, align_documents=True)
        for _ in range(12):  # several epochs: each reads the big shard's two steps
            x, _ = loader.next_batch()
            assert (x[:, 0] == 50256).all()
        assert loader.epoch >= 4
