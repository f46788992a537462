"""TokenDataset / TokenMixture over real exports of every format: items, ranks, resume, workers, mixing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from corpus.errors import ConfigError, InputError
from corpus.export.loader import IGNORE, TokenDataset, TokenMixture, collate, cu_seqlens
from corpus.export.writers import ExportReader, NumpyReader, ParquetTokenReader
from tests.corpus.export.conftest import LOADER_EXPORTS

DOC_FORMATS = ("megatron", "nanotron", "numpy")
ALL = tuple(LOADER_EXPORTS)


# ----------------------------------------------------------------------------- reference items
def reference_flat(path: Path) -> tuple[np.ndarray, list[int]]:
    """The export's token stream and document ends, from documents.parquet (not the loader's indexes)."""
    docs = [ids for _, ids in ExportReader(str(path)).documents()]
    return np.concatenate(docs).astype(np.int64), np.cumsum([d.size for d in docs]).tolist()


def reference_doc_item(flat: np.ndarray, ends: list[int], j: int, L: int) -> dict[str, list[int]]:
    a = j * L
    labels, pos, start = [], [], a
    end_set = set(ends)
    for p in range(a, a + L):
        if p in end_set:
            start = p
        pos.append(p - start)
        labels.append(IGNORE if (p + 1) in end_set else int(flat[p + 1]))
    return {"input_ids": flat[a:a + L].tolist(), "labels": labels, "position_ids": pos}


def packed_rows(path: Path) -> list[tuple[np.ndarray, list[int], np.ndarray | None]]:
    """(row, piece lengths, loss mask or None) of every row, read with the format's own reader."""
    m = json.loads((path / "manifest.json").read_text())
    rows = []
    for sh in m["shards"]:
        first = path / sh["files"][0]
        if m["format"] == "parquet":
            import pyarrow.parquet as pq

            t = pq.read_table(first)
            masks = t.column("loss_mask").to_pylist() if "loss_mask" in t.column_names else None
            for i, (row, lens) in enumerate(ParquetTokenReader(str(first)).rows()):
                rows.append((row, lens.tolist(), None if masks is None else np.asarray(masks[i])))
        else:
            r = NumpyReader(str(first))
            width = r.seq_len
            mask = np.fromfile(str(first)[:-4] + ".mask.bin", np.uint8).reshape(-1, width) if m.get("sft") else None
            for k, row in enumerate(r.rows()):
                lens = [int(b - a) for a, b in r.pieces if k * width <= a < (k + 1) * width]
                rows.append((row, lens, None if mask is None else mask[k]))
    return rows


def reference_packed_item(row: np.ndarray, lens: list[int], mask: np.ndarray | None) -> dict[str, list[int]]:
    L = row.size
    piece = [-1] * L
    starts = []
    p = 0
    for k, n in enumerate(lens):
        starts.append(p)
        for i in range(p, p + n):
            piece[i] = k
        p += n
    labels, pos, seg = [], [], 0
    for i in range(L):
        if (piece[i] >= 0 and i == starts[piece[i]]) or (piece[i] < 0 and (i == 0 or piece[i - 1] >= 0)):
            seg = i
        pos.append(i - seg)
        ok = piece[i] >= 0 and i + 1 < L and piece[i + 1] == piece[i]
        if mask is not None:
            ok = ok and bool(mask[i + 1])
        labels.append(int(row[i + 1]) if ok else IGNORE)
    out = {"input_ids": row.astype(np.int64).tolist(), "labels": labels, "position_ids": pos}
    if mask is not None:
        out["loss_mask"] = [int(x != IGNORE) for x in labels]
    return out


def as_lists(item: dict[str, np.ndarray]) -> dict[str, list[int]]:
    for v in item.values():
        assert v.dtype == np.int64 and v.ndim == 1
    return {k: v.tolist() for k, v in item.items()}


@pytest.mark.parametrize("name", ALL)
def test_items_equal_the_reference(loader_exports: dict[str, Path], name: str) -> None:
    path = loader_exports[name]
    if name in DOC_FORMATS:
        flat, ends = reference_flat(path)
        for L in (64, 37):
            ds = TokenDataset(path, seq_len=L)
            assert ds.n == (flat.size - 1) // L and not ds.sft
            for j in range(ds.n):
                assert as_lists(ds.sample(j)) == reference_doc_item(flat, ends, j, L), (name, L, j)
    else:
        rows = packed_rows(path)
        ds = TokenDataset(path)
        assert ds.n == len(rows) and ds.sft == name.startswith("sft")
        for j, (row, lens, mask) in enumerate(rows):
            assert as_lists(ds.sample(j)) == reference_packed_item(row, lens, mask), (name, j)
        if ds.sft:  # every trained token of the manifest is one trained label
            total = sum(int(ds.sample(j)["loss_mask"].sum()) for j in range(ds.n))
            assert total == ds.manifest["sft"]["trained_tokens"] > 0


# ----------------------------------------------------------------------------- ranks and resume
def key(item: dict[str, np.ndarray]) -> bytes:
    return item["input_ids"].tobytes() + item["labels"].tobytes()


def take(ds: TokenDataset | TokenMixture, k: int | None = None) -> list[bytes]:
    out = []
    for item in ds:
        out.append(key(item))
        if k is not None and len(out) == k:
            break
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target])
@given(name=st.sampled_from(ALL), seq_len=st.integers(24, 150), world=st.integers(1, 4), world2=st.integers(1, 4),
       seed=st.integers(0, 2**40), stop=st.floats(0, 1, exclude_max=True), epoch=st.integers(0, 2))
def test_ranks_disjoint_cover_and_resume_exactly(loader_exports: dict[str, Path], name: str, seq_len: int, world: int,
                                                  world2: int, seed: int, stop: float, epoch: int) -> None:
    path = loader_exports[name]
    L = seq_len if name in DOC_FORMATS else None
    every = Counter(key(TokenDataset(path, seq_len=L).sample(j)) for j in range(TokenDataset(path, seq_len=L).n))

    def rank(r: int, w: int) -> TokenDataset:
        ds = TokenDataset(path, seq_len=L, rank=r, world_size=w, seed=seed)
        ds.set_epoch(epoch)
        return ds

    n = sum(every.values())
    streams = [take(rank(r, world)) for r in range(world)]
    # equal lengths, disjoint, together the whole epoch but the last n % world positions
    assert all(len(s) == n // world == len(rank(r, world)) for r, s in enumerate(streams))
    got = Counter(k for s in streams for k in s)
    assert not got - every and sum(got.values()) == n - n % world
    # stop every rank after k items; the same world size resumes exactly
    k = int(stop * (n // world))
    states = []
    for r in range(world):
        ds = rank(r, world)
        assert take(ds, k) == streams[r][:k] if k else True
        states.append(ds.state_dict())
        again = TokenDataset(path, seq_len=L, rank=r, world_size=world, seed=seed)
        again.load_state_dict(json.loads(json.dumps(states[-1])))  # states are plain JSON
        assert take(again) == streams[r][k:]
    # another world size continues the same epoch: nothing repeated, nothing lost but < world2 samples
    rest = []
    for r in range(world2):
        ds = TokenDataset(path, seq_len=L, rank=r, world_size=world2, seed=seed)
        ds.load_state_dict(states[0])
        rest.append(take(ds))
    assert len({len(s) for s in rest}) == 1
    if (n - k * world) // world2 == 0:  # fewer than world2 samples left: they are the remainder, go on to epoch+1
        nxt = [TokenDataset(path, seq_len=L, rank=r, world_size=world2, seed=seed) for r in range(world2)]
        for r, ds in enumerate(nxt):
            ds.set_epoch(epoch + 1)
            assert take(ds) == rest[r]
        return
    seen = Counter(x for s in streams for x in s[:k]) + Counter(x for s in rest for x in s)
    assert not seen - every and n - sum(seen.values()) < world2


def test_epochs_reshuffle_and_seed_decides_order(loader_exports: dict[str, Path]) -> None:
    path = loader_exports["nanotron"]
    ds = TokenDataset(path, seq_len=50, seed=7)
    e0, e1 = take(ds), take(ds)  # iterating again runs the next epoch
    assert sorted(e0) == sorted(e1) and e0 != e1
    assert take(TokenDataset(path, seq_len=50, seed=7)) == e0
    assert take(TokenDataset(path, seq_len=50, seed=8)) != e0
    assert ds.state_dict()["epoch"] == 2 and ds.state_dict()["offset"] == 0


def test_state_at_epoch_end_moves_to_next_epoch(loader_exports: dict[str, Path]) -> None:
    path = loader_exports["megatron"]
    ds = TokenDataset(path, seq_len=64, world_size=2, rank=1)
    it = iter(ds)
    for _ in range(len(ds)):
        next(it)
    st_ = ds.state_dict()
    assert (st_["epoch"], st_["offset"]) == (1, 0)
    nxt = TokenDataset(path, seq_len=64, world_size=2, rank=1)
    nxt.load_state_dict(st_)
    ref = TokenDataset(path, seq_len=64, world_size=2, rank=1)
    ref.set_epoch(1)
    assert take(nxt) == take(ref)


# ----------------------------------------------------------------------------- DataLoader workers
@pytest.mark.parametrize("name", ["numpy", "sft-parquet"])
def test_dataloader_workers_keep_order_and_resume(loader_exports: dict[str, Path], name: str) -> None:
    path = loader_exports[name]
    B = 3

    def make() -> TokenDataset:
        return TokenDataset(path, rank=1, world_size=2, seed=5, batch_size=B)

    single = [collate(list(batch)) for batch in _batches(make(), B)]
    ds = make()
    dl = torch.utils.data.DataLoader(ds, batch_size=B, num_workers=2, collate_fn=collate)
    multi = list(dl)
    assert len(multi) == len(single) > 4
    for a, b in zip(multi, single):
        assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "labels", "position_ids"))
    # stop after 4 batches; the state is gathered in the main process from the count of items
    state = ds.state_dict(consumed=4 * B)
    resumed = make()
    resumed.load_state_dict(state)
    rest = list(torch.utils.data.DataLoader(resumed, batch_size=B, num_workers=2, collate_fn=collate))
    assert len(rest) == len(single) - 4
    for a, b in zip(rest, single[4:]):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    with pytest.raises(ConfigError, match="count items, not batches"):
        ds.state_dict(consumed=10**6)


def test_persistent_workers_move_to_the_next_epoch(loader_exports: dict[str, Path]) -> None:
    path = loader_exports["megatron"]
    ref = TokenDataset(path, seq_len=100, seed=2, batch_size=4)
    epochs = [[key(it) for it in ref] for _ in range(2)]
    dl = torch.utils.data.DataLoader(TokenDataset(path, seq_len=100, seed=2, batch_size=4), batch_size=4,
                                     num_workers=2, persistent_workers=True, collate_fn=collate)
    for e in range(2):
        got = [b["input_ids"][i].numpy().tobytes() + b["labels"][i].numpy().tobytes()
               for b in dl for i in range(b["input_ids"].shape[0])]
        assert got == epochs[e]


def _batches(ds: TokenDataset, b: int) -> list[list[dict[str, np.ndarray]]]:
    items = list(ds)
    return [items[i:i + b] for i in range(0, len(items), b)]


# ----------------------------------------------------------------------------- mixture
def test_mixture_tokens_follow_weights_and_resume(loader_exports: dict[str, Path]) -> None:
    a, b = loader_exports["megatron"], loader_exports["parquet"]
    in_b = {key(TokenDataset(b).sample(j)): j for j in range(TokenDataset(b).n)}
    real_b = [int(sum(lens)) for _, lens, _ in packed_rows(b)]
    for weights in ((1.0, 3.0), (2.0, 0.5)):
        mix = TokenMixture([(str(a), weights[0]), (str(b), weights[1])], seq_len=64, seed=1)
        tokens = [0, 0]
        items = []
        for item in mix:
            k = key(item)
            items.append(k)
            if k in in_b:
                tokens[1] += real_b[in_b[k]]
            else:
                tokens[0] += 64
        share = tokens[1] / sum(tokens)
        assert abs(share - weights[1] / sum(weights)) < 0.01, (weights, tokens)
    mix = TokenMixture([(str(a), 2.0), (str(b), 0.5)], seq_len=64, seed=1, rank=1, world_size=3)
    first = take(mix, 11)
    state = mix.state_dict()
    again = TokenMixture([(str(a), 2.0), (str(b), 0.5)], seq_len=64, seed=1, rank=1, world_size=3)
    full = take(again)
    again.load_state_dict(state)
    assert first == full[:11] and take(again) == full[11:]
    # under DataLoader workers the mixture arrives in the same order
    dl_mix = TokenMixture([(str(a), 2.0), (str(b), 0.5)], seq_len=64, seed=1, rank=1, world_size=3, batch_size=4)
    dl = torch.utils.data.DataLoader(dl_mix, batch_size=4, num_workers=2, collate_fn=collate)
    got = [bt["input_ids"][i].numpy().tobytes() + bt["labels"][i].numpy().tobytes()
           for bt in dl for i in range(bt["input_ids"].shape[0])]
    assert got == full
    other = TokenMixture([(str(a), 1.0), (str(b), 0.5)], seq_len=64, seed=1, rank=1, world_size=3)
    with pytest.raises(ConfigError, match=r"cannot resume: the state was saved with weights=\[2.0, 0.5\]"):
        other.load_state_dict(state)


# ----------------------------------------------------------------------------- edges and errors
def test_errors_are_clear(loader_exports: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"packed into rows of 64 tokens; pass seq_len=64"):
        TokenDataset(loader_exports["parquet"], seq_len=32)
    with pytest.raises(ConfigError, match=r"rank 2 is not in \[0, world_size=2\)"):
        TokenDataset(loader_exports["numpy"], rank=2, world_size=2)
    with pytest.raises(InputError, match="no readable manifest.json"):
        TokenDataset(tmp_path)
    ds = TokenDataset(loader_exports["numpy"], seq_len=30)
    state = ds.state_dict()
    with pytest.raises(ConfigError, match="cannot resume: the state was saved with seq_len=30 but this TokenDataset "
                                          "has seq_len=31"):
        TokenDataset(loader_exports["numpy"], seq_len=31).load_state_dict(state)
    with pytest.raises(ConfigError, match="cannot resume: the state was saved with seed=0"):
        TokenDataset(loader_exports["numpy"], seq_len=30, seed=1).load_state_dict(state)
    with pytest.raises(ConfigError, match="cannot resume: the state was saved with export="):
        TokenDataset(loader_exports["nanotron"], seq_len=30).load_state_dict(state)
    with pytest.raises(ConfigError, match="not a TokenDataset state"):
        TokenDataset(loader_exports["numpy"], seq_len=30).load_state_dict({"epoch": 0})


def test_reads_are_memory_mapped(loader_exports: dict[str, Path]) -> None:
    for name in ("megatron", "nanotron", "numpy", "numpy-packed", "sft-numpy"):
        src = TokenDataset(loader_exports[name], seq_len=16 if name in DOC_FORMATS else None).source
        arrays = getattr(src, "arrays", None) or getattr(src, "rows")
        assert all(isinstance(a, np.memmap) or isinstance(a.base, np.memmap) for a in arrays), name


@pytest.mark.parametrize("name", ["megatron", "numpy-packed", "sft-parquet"])
def test_pickles_as_a_recipe_not_as_data(loader_exports: dict[str, Path], name: str) -> None:
    import pickle

    ds = TokenDataset(loader_exports[name], rank=1, world_size=2, seed=4)
    it = iter(ds)
    [next(it) for _ in range(3)]
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # spawn-started DataLoader workers get paths, not shard contents
    copy = pickle.loads(blob)
    assert copy.state_dict() == ds.state_dict() and take(copy) == take(ds)


def test_drop_last_false_pads_like_distributed_sampler(loader_exports: dict[str, Path]) -> None:
    path = loader_exports["parquet-nosplit"]
    n = TokenDataset(path).n
    world = 4 if n % 4 else 3
    assert n % world
    streams = [take(TokenDataset(path, rank=r, world_size=world, drop_last=False)) for r in range(world)]
    assert {len(s) for s in streams} == {-(-n // world)}
    every = {key(TokenDataset(path).sample(j)) for j in range(n)}
    assert {x for s in streams for x in s} == every


def test_collate_gives_document_boundaries(loader_exports: dict[str, Path]) -> None:
    ds = TokenDataset(loader_exports["nanotron"], seq_len=128)
    items = [ds.sample(j) for j in range(4)]
    batch = collate(items)
    cu = batch["cu_seqlens"].numpy()
    flat_pos = np.concatenate([it["position_ids"] for it in items])
    assert cu[0] == 0 and cu[-1] == 4 * 128 and (np.diff(cu) > 0).all()
    assert set(cu[:-1].tolist()) == set(np.flatnonzero(flat_pos == 0).tolist())
    assert batch["max_seqlen"] == int(np.diff(cu).max())
    assert np.array_equal(cu_seqlens(batch["position_ids"]), cu)
    # a document that spans a window boundary counts as two sequences, each starting at position 0
    assert all(flat_pos[c] == 0 for c in cu[:-1])


def test_works_without_torch(loader_exports: dict[str, Path]) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from corpus.export.loader import TokenDataset, collate\n"
        f"ds = TokenDataset({str(loader_exports['megatron'])!r}, seq_len=32, world_size=2)\n"
        "items = list(ds)\n"
        "b = collate(items[:2])\n"
        "print(type(ds).__mro__[2].__name__, len(items) == len(ds), type(b['input_ids']).__name__)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["object", "True", "ndarray"]


def test_is_an_iterable_dataset(loader_exports: dict[str, Path]) -> None:
    ds: Any = TokenDataset(loader_exports["numpy"], seq_len=16)
    assert isinstance(ds, torch.utils.data.IterableDataset)
