"""The token loader trainers plug in: :class:`TokenDataset`, :class:`TokenMixture`, :func:`collate`.

``TokenDataset(path, seq_len=None, rank=0, world_size=1, seed=0)`` reads any export folder
(megatron, nanotron/datatrove, numpy flat or packed, Parquet, and SFT exports) through its
manifest, memory-mapped (see :mod:`corpus.export.loader_formats` for how each format becomes
samples and what an item holds). It is a ``torch.utils.data.IterableDataset`` when torch is
importable and a plain iterable otherwise; torch is never required.

**Order.** Epoch ``e`` visits the ``n`` samples in a seeded permutation that depends on
``(seed, e)`` only (Parquet, which is decoded a row group at a time, shuffles the row groups
and the rows inside each group, so a reader decodes each group once). Position ``g`` of the
epoch's permutation goes to rank ``g % world_size``: the ranks' streams are disjoint, each
has ``len(ds) = n // world_size`` samples and together they cover the epoch except the last
``n % world_size`` positions of that epoch's permutation, which differ every epoch
(``drop_last=False`` instead pads every rank to ``ceil(n / world_size)`` by wrapping
around to the start of the permutation, as ``DistributedSampler`` does).

**State.** ``state_dict()`` is ``{epoch, offset, ...}`` where ``offset`` is a *global*
position in the epoch's permutation: after every rank took ``k`` items it is
``start + k * world_size``. ``load_state_dict()`` continues from that position, so the
dataset yields item ``k+1`` onward of the uninterrupted run. Resuming with another
``world_size`` follows the same rule: the new ranks split the rest of the permutation,
``offset + r + j * world_size'``, so within the epoch nothing is repeated or skipped (all
ranks must save at the same step, as synchronous data parallelism does). A state saved for
another export, ``seq_len``, seed or sample count is refused with a ConfigError.

**DataLoader workers.** With ``num_workers = K`` each worker takes blocks ``w, w+K, ...``
of ``batch_size`` consecutive items of the rank's stream; DataLoader hands out the workers'
batches round-robin, so the loop receives exactly the single-process order (give the
dataset the DataLoader's ``batch_size``). The workers' copies advance, not yours: gather the
state in the main process with ``ds.state_dict(consumed=n)``, ``n`` = items your loop took
from the DataLoader since it was started from this dataset's state (steps x batch size).
Call ``ds.set_epoch(e)`` (or ``load_state_dict``) before starting each epoch's iterator
(``persistent_workers=True`` workers move on to the next epoch by themselves). Datasets pickle as
the paths to reopen (a few KB), never as the memory-mapped shards, so spawn-started workers
are cheap too.

``TokenMixture([(path, weight), ...], seed=...)`` mixes exports by weight in tokens and has
the same order, rank, state and worker rules.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from corpus.errors import ConfigError
from corpus.export.loader_formats import IGNORE, SampleSource, open_source

try:  # torch stays optional: an IterableDataset when it is there, a plain iterable otherwise
    import torch
    from torch.utils.data import IterableDataset as _Base
    from torch.utils.data import get_worker_info
except ImportError:  # pragma: no cover - exercised in environments without torch
    torch = None
    _Base = object  # type: ignore[assignment,misc]

    def get_worker_info() -> Any:  # type: ignore[misc]
        return None

STATE_VERSION = 1
__all__ = ["IGNORE", "TokenDataset", "TokenMixture", "collate", "cu_seqlens"]


def epoch_order(n: int, seed: int, epoch: int, salt: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """The seeded permutation of ``n`` samples for ``epoch`` (blocked by ``groups`` when given)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF,
                                                                         epoch, salt])))
    if groups is None or len(groups) <= 2:
        return rng.permutation(n).astype(np.int64)
    sizes = np.diff(groups)
    parts = [groups[g] + rng.permutation(int(sizes[g])) for g in rng.permutation(sizes.size)]
    return np.concatenate(parts).astype(np.int64)


class _EpochStream(_Base):  # type: ignore[misc,valid-type]
    """Epochs of ``n`` items in a seeded order, split over ranks and DataLoader workers, resumable."""

    kind = "stream"

    def __init__(self, *, rank: int, world_size: int, seed: int, drop_last: bool, batch_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size}); pass 0 <= rank < world_size")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.drop_last, self.batch_size = drop_last, batch_size
        self.epoch = 0
        self.offset = 0
        self._order_cache: tuple[int, Any] | None = None

    # -- what subclasses provide ----------------------------------------------------------
    @property
    def n(self) -> int:
        raise NotImplementedError

    def _fingerprint(self) -> dict[str, Any]:
        raise NotImplementedError

    def _make_order(self, epoch: int) -> Any:
        raise NotImplementedError

    def _get(self, order: Any, g: int, epoch: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # -- order and split --------------------------------------------------------------------
    def _order(self, epoch: int) -> Any:
        if self._order_cache is None or self._order_cache[0] != epoch:
            self._order_cache = (epoch, self._make_order(epoch))
        return self._order_cache[1]

    def __len__(self) -> int:
        """Items this rank yields per (whole) epoch."""
        return self.n // self.world_size if self.drop_last else -(-self.n // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (call before each epoch when DataLoader workers are used)."""
        self.epoch, self.offset = int(epoch), 0

    def _normalized(self, epoch: int, offset: int) -> tuple[int, int]:
        if self.n and self._count(offset) == 0:
            return epoch + 1, 0
        return epoch, offset

    def _count(self, offset: int) -> int:
        rem = max(0, self.n - offset)
        return rem // self.world_size if self.drop_last else -(-rem // self.world_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        epoch, start = self._normalized(self.epoch, self.offset)
        count = self._count(start)
        info = get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        order = self._order(epoch)
        n, W, B = self.n, self.world_size, self.batch_size
        block = wid
        while block * B < count:
            for j in range(block * B, min(count, (block + 1) * B)):
                g = (start + self.rank + j * W) % n
                item = self._get(order, g, epoch)
                if info is None:  # in-process: the state follows what was handed out
                    self.epoch, self.offset = epoch, start + (j + 1) * W
                yield item
            block += workers
        # the next iteration runs the next epoch (also in persistent DataLoader workers' copies)
        self.epoch, self.offset = epoch + 1, 0

    # -- state ------------------------------------------------------------------------------
    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this rank stands. ``consumed``: items taken from a multi-worker DataLoader (see module doc)."""
        epoch, offset = self.epoch, self.offset
        if consumed is not None:
            epoch, start = self._normalized(epoch, offset)
            if not 0 <= consumed <= self._count(start):
                raise ConfigError(f"consumed={consumed} is not in [0, {self._count(start)}], the items this rank "
                                  "has in the epoch the iterator was started in; count items, not batches")
            offset = start + consumed * self.world_size
        epoch, offset = self._normalized(epoch, offset)
        return {"version": STATE_VERSION, "kind": self.kind, "epoch": epoch, "offset": offset,
                "world_size": self.world_size, "rank": self.rank, "seed": self.seed, "drop_last": self.drop_last,
                **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from any rank; another world_size continues by the global-offset rule)."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or state.get("kind") != self.kind:
            raise ConfigError(f"not a {type(self).__name__} state (version {STATE_VERSION}); pass what "
                              "state_dict() returned")
        mine = {"seed": self.seed, "drop_last": self.drop_last, **self._fingerprint()}
        for key, value in mine.items():
            if state.get(key) != value:
                raise ConfigError(f"cannot resume: the state was saved with {key}={state.get(key)!r} but this "
                                  f"{type(self).__name__} has {key}={value!r}; build it with the same exports, "
                                  "seq_len, weights and seed")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


class TokenDataset(_EpochStream):
    """Samples of one export folder (see module doc). Items: dicts of 1-D int64 arrays of ``seq_len``."""

    kind = "token-dataset"

    def __init__(self, path: str, *, seq_len: int | None = None, rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool = True, batch_size: int = 1, _salt: int = 0) -> None:
        super().__init__(rank=rank, world_size=world_size, seed=seed, drop_last=drop_last, batch_size=batch_size)
        self.source: SampleSource = open_source(str(path), seq_len)
        self.path = str(path)
        self.seq_len = self.source.seq_len
        self.sft = self.source.sft
        self._salt = _salt

    @property
    def n(self) -> int:
        return self.source.n

    @property
    def manifest(self) -> dict[str, Any]:
        return self.source.manifest

    def _fingerprint(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len, "samples": self.n, "export": self.source.fingerprint}

    def _make_order(self, epoch: int) -> np.ndarray:
        return epoch_order(self.n, self.seed, epoch, self._salt, self.source.groups())

    def _get(self, order: np.ndarray, g: int, epoch: int) -> dict[str, np.ndarray]:
        return self.source.item(int(order[g]))

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` of the export in storage order (no shuffle, no rank split)."""
        return self.source.item(index)

    def item_index(self, epoch: int, g: int) -> int:
        """The sample at global position ``g`` of ``epoch``'s order."""
        return int(self._order(epoch)[g])


class TokenMixture(_EpochStream):
    """Several exports mixed by weight, measured in tokens.

    An epoch has ``samples`` items (default: the sources' samples added up). Source ``i``
    gets ``n_i`` of them, ``n_i`` proportional to ``weight_i / t_i`` where ``t_i`` is its
    mean number of document (non-padding) tokens per sample, so each source's share of the
    epoch's tokens is its share of the weights (to within a sample, rounded by largest
    remainder). Source ``i``'s items come from its own endless stream of epochs
    (``TokenDataset`` order with seed ``seed`` and salt ``i``), continued across mixture
    epochs; a source drawn more often than it has samples repeats in a new order. The
    interleaving is a seeded shuffle per mixture epoch.
    """

    kind = "token-mixture"

    def __init__(self, sources: Sequence[tuple[str, float]], *, seq_len: int | None = None, rank: int = 0,
                 world_size: int = 1, seed: int = 0, samples: int | None = None, drop_last: bool = True,
                 batch_size: int = 1) -> None:
        super().__init__(rank=rank, world_size=world_size, seed=seed, drop_last=drop_last, batch_size=batch_size)
        if not sources:
            raise ConfigError("TokenMixture needs at least one (path, weight) pair")
        for p, w in sources:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"TokenMixture: weight of {p} must be a finite number >= 0, got {w!r}")
        if sum(w for _, w in sources) <= 0:
            raise ConfigError("TokenMixture: all weights are 0; give at least one source a positive weight")
        self.datasets = [TokenDataset(p, seq_len=seq_len, seed=seed, _salt=i + 1) for i, (p, _) in enumerate(sources)]
        lens = {d.seq_len for d in self.datasets}
        if len(lens) > 1:
            raise ConfigError(f"TokenMixture: the exports have different seq_len ({sorted(lens)}); pass seq_len= "
                              "(document formats) or use exports packed to the same length")
        for d, (p, w) in zip(self.datasets, sources):
            if d.n == 0 and w > 0:
                raise ConfigError(f"TokenMixture: {p} has no sample of {d.seq_len} tokens")
        self.seq_len = lens.pop()
        self.weights = [float(w) for _, w in sources]
        self.sft = any(d.sft for d in self.datasets)
        total = int(samples) if samples is not None else sum(d.n for d in self.datasets)
        if total < 1:
            raise ConfigError(f"TokenMixture: samples must be at least 1, got {total}")
        tps = [d.source.tokens_per_sample or 1.0 for d in self.datasets]
        share = np.array([w / t for w, t in zip(self.weights, tps)])
        share = share / share.sum()
        exact = share * total
        counts = np.floor(exact).astype(np.int64)
        rest = total - int(counts.sum())
        if rest:
            counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
        self.counts = counts
        self._n = total

    @property
    def n(self) -> int:
        return self._n

    def _fingerprint(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len, "samples": self.n, "weights": self.weights,
                "export": [d.source.fingerprint for d in self.datasets]}

    def _make_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        src = np.repeat(np.arange(len(self.datasets), dtype=np.int32), self.counts)
        src = src[epoch_order(src.size, self.seed, epoch, 0)]
        occ = np.zeros(src.size, dtype=np.int64)  # k-th appearance of its source in this epoch
        for i in range(len(self.datasets)):
            m = src == i
            occ[m] = np.arange(int(m.sum()), dtype=np.int64)
        return src, occ

    def _get(self, order: tuple[np.ndarray, np.ndarray], g: int, epoch: int) -> dict[str, np.ndarray]:
        src, occ = order
        i = int(src[g])
        d = self.datasets[i]
        k = epoch * int(self.counts[i]) + int(occ[g])
        q, r = divmod(k, d.n)
        return d.source.item(d.item_index(q, r))

    def source_of(self, epoch: int, g: int) -> int:
        """Which source supplies global position ``g`` of ``epoch``."""
        return int(self._order(epoch)[0][g])


# ----------------------------------------------------------------------------- batching
def cu_seqlens(position_ids: Any) -> np.ndarray:
    """Cumulative sequence starts (int32, ``[0, ..., B*L]``) of the documents in a ``(B, L)`` batch.

    Every row starts a sequence and every ``position_ids == 0`` starts one, as flash-attention's
    varlen kernels (``cu_seqlens_q/k``) expect for the batch flattened to one row.
    """
    pos = np.asarray(position_ids.cpu() if hasattr(position_ids, "cpu") else position_ids)
    if pos.ndim == 1:
        pos = pos[None, :]
    flat = pos.reshape(-1)
    starts = np.flatnonzero(flat == 0)
    row_starts = np.arange(0, flat.size, pos.shape[1])
    starts = np.union1d(starts, row_starts)
    return np.concatenate([starts, [flat.size]]).astype(np.int32)


def collate(items: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Stack items into ``(B, L)`` arrays (torch tensors when torch is there) plus ``cu_seqlens``/``max_seqlen``."""
    if not items:
        raise ConfigError("collate needs at least one item")
    out: dict[str, Any] = {k: np.stack([it[k] for it in items]) for k in items[0]}
    cu = cu_seqlens(out["position_ids"])
    max_len = int(np.diff(cu).max()) if cu.size > 1 else 0
    if torch is not None:
        out = {k: torch.from_numpy(v) for k, v in out.items()}
        out["cu_seqlens"] = torch.from_numpy(cu)
    else:
        out["cu_seqlens"] = cu
    out["max_seqlen"] = max_len
    return out
