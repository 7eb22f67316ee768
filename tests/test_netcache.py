"""The network cache: keys tell views apart, a search with it sees exactly what the network says, and
it never keeps the answers of a model that was swapped out."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from blobnet.cards import N_ACTIONS, N_VALUES
from blobnet.config import ConfigError, SearchConfig
from blobnet.encode import WIDTH
from blobnet.features import encode_state
from blobnet.netcache import COLLISIONS, HITS, KEY_LANES, LOOKUPS, NetCache, find, store, view_key
from blobnet.position import (
    BID_TOTAL,
    BIDS,
    CARDS_LATER,
    DEALER,
    HAND,
    IN_GAME,
    LEADER,
    PLAYED,
    PLAYERS,
    ROUND_INDEX,
    SCHED_LEN,
    TO_PLAY,
    TOTALS,
    TRICK,
    TRICK_LEN,
    TRICKS_DONE,
    TRUMP,
    VOIDS,
    WIN_SEAT,
    WON,
    pack,
)
from blobnet.rules import Round
from blobnet.search import Search


class RowEvaluator:
    """Answers that depend on each row alone (and on ``model_version``), computed row by row, so a
    row answered in any batch, or from a cache, gets the same numbers."""

    def __init__(self) -> None:
        self.model_version = 0
        self.rows = 0
        rng = np.random.default_rng(7)
        self.w_prior = rng.random(WIDTH)
        self.w_value = rng.random((N_VALUES, WIDTH))

    def answer(self, features: np.ndarray, legal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = features.astype(np.float64) + self.model_version
        score = (f * self.w_prior).sum(axis=1)
        priors = legal * (1.0 + np.outer(score, np.arange(N_ACTIONS)) % 1.0)
        priors = (priors / priors.sum(axis=1, keepdims=True)).astype(np.float32)
        values = np.stack([(f * w).sum(axis=1) for w in self.w_value], axis=1)
        return priors, (values % 1.0).astype(np.float32)

    async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
        self.rows += len(features)
        out = self.answer(features, legal)
        await asyncio.sleep(0)
        return out


def views(n: int) -> list:  # type: ignore[type-arg]
    """The first ``n`` searched views of a few random rounds (bids and plays)."""
    out = []
    rng = np.random.default_rng(3)
    for seed in range(n):
        r = Round.deal(players=4, cards=4, trump=None if seed % 3 == 0 else seed % 4, dealer=seed % 4, seed=seed)
        for _ in range(int(rng.integers(0, 8))):
            r.play(int(rng.choice(r.legal_actions())))
        out.append(r.view(r.to_play))
    return out


async def search_all(search: Search, vs: list, seed: int = 0) -> list[list[int]]:  # type: ignore[type-arg]
    return [(await search.run(v, np.random.default_rng([seed, i]))).visits for i, v in enumerate(vs)]


def positions(n: int) -> list[tuple[np.ndarray, int]]:
    """``n`` random positions (bids, plays, tricks done, some inside a game) and a seat viewing each."""
    rng = np.random.default_rng(11)
    out = []
    for seed in range(n):
        players = int(rng.integers(3, 6))
        r = Round.deal(players=players, cards=int(rng.integers(1, 6)), trump=None if seed % 4 == 0 else seed % 4,
                       dealer=seed % players, seed=seed)  # fmt: skip
        for _ in range(int(rng.integers(0, r.players * (r.cards + 1)))):
            r.play(int(rng.choice(r.legal_actions())))
        st = pack(r)
        if seed % 3 == 0:  # a round inside a game: totals and the schedule
            st[IN_GAME], st[ROUND_INDEX], st[SCHED_LEN], st[CARDS_LATER] = 1, 2, 9, 20
            st[TOTALS : TOTALS + players] = rng.integers(-10, 60, players)
        out.append((st, int(rng.integers(0, players))))
    return out


def key_and_row(st: np.ndarray, viewer: int, kind: int = 1) -> tuple[tuple[int, ...], bytes]:
    key = np.zeros(KEY_LANES, np.int64)
    view_key(st, viewer, kind, key)
    row = np.zeros(WIDTH, np.float32)
    encode_state(st, viewer, row)
    return tuple(key.tolist()), row.tobytes()


def test_a_views_key_ignores_the_hidden_hands_and_equal_keys_are_equal_rows():
    seen: dict[tuple[int, ...], bytes] = {}
    for st, viewer in positions(300):
        key, row = key_and_row(st, viewer)
        assert all(0 <= k <= 0xFFFFFFFF for k in key)
        assert seen.setdefault(key, row) == row  # a key met again is the same row
        others = [HAND + s for s in range(st[PLAYERS]) if s != viewer]
        dealt = st.copy()
        dealt[others] = st[others[::-1]]  # another deal of the hidden cards
        assert key_and_row(dealt, viewer) == (key, row)
    assert len(seen) > 250


def test_any_slot_the_row_reads_changes_the_key_and_so_do_the_viewer_and_the_kind():
    st, viewer = next((st, v) for st, v in positions(40) if st[TRICK_LEN] > 0 and st[IN_GAME])
    n = int(st[PLAYERS])
    header = [TRUMP, DEALER, TO_PLAY, BID_TOTAL, TRICK_LEN, LEADER, WIN_SEAT, TRICKS_DONE, ROUND_INDEX, CARDS_LATER]
    read = header + [HAND + viewer, TRICK] + [base + s for base in (BIDS, WON, PLAYED, VOIDS, TOTALS) for s in range(n)]
    masks = {HAND + viewer} | {PLAYED + s for s in range(n)}

    def key_of(st: np.ndarray, viewer: int, kind: int = 1) -> tuple[int, ...]:
        out = np.zeros(KEY_LANES, np.int64)
        view_key(st, viewer, kind, out)
        return tuple(out.tolist())

    key = key_of(st, viewer)
    for slot in read:
        for bit in (0, 40) if slot in masks else (0,):  # a card mask's low and high words
            changed = st.copy()
            changed[slot] ^= 1 << bit
            assert key_of(changed, viewer) != key, slot
    assert key_of(st, (viewer + 1) % n) != key
    assert key_of(st, viewer, kind=0) != key


def test_a_key_whose_check_lane_differs_is_counted_as_a_collision_and_not_answered():
    cache = NetCache(16)
    key = np.array([3, 11, 12], np.int64)
    store(cache.keys, cache.values, key, 0.25)
    assert find(cache.keys, cache.stats, key) == 3 and cache.values[3] == 0.25
    assert find(cache.keys, cache.stats, np.array([3, 11, 13], np.int64)) == -1
    assert find(cache.keys, cache.stats, np.array([19, 11, 12], np.int64)) == -1  # same slot, another key
    assert cache.stats.tolist() == [3, 1, 1]  # lookups, hits, collisions
    cache.clear(version=5)
    assert find(cache.keys, cache.stats, key) == -1 and cache.version == 5
    assert (LOOKUPS, HITS, COLLISIONS) == (0, 1, 2)


def test_a_search_with_the_cache_sees_exactly_what_the_network_says_and_asks_fewer_rows():
    vs = views(12)
    plain, cached = RowEvaluator(), RowEvaluator()
    cfg = SearchConfig(dets=3, sims=30)
    without = asyncio.run(search_all(Search(plain, SearchConfig(dets=3, sims=30, cache=0)), vs))
    search = Search(cached, cfg)
    with_cache = asyncio.run(search_all(search, vs))
    assert with_cache == without
    lookups, hits, collisions = search.cache.stats.tolist()
    assert hits > 0 and collisions == 0
    assert cached.rows == plain.rows - hits and search.evaluations == cached.rows


def test_the_cache_answers_rows_met_in_an_earlier_search_of_the_same_model():
    vs = views(6)
    ev = RowEvaluator()
    search = Search(ev, SearchConfig(dets=2, sims=20))
    first = asyncio.run(search_all(search, vs))
    rows_first, (lookups0, hits0, _) = ev.rows, search.cache.stats.tolist()
    again = asyncio.run(search_all(search, vs))  # the same searches: every own-view row is in the cache
    assert again == first
    lookups, hits, _ = (search.cache.stats - [lookups0, hits0, 0]).tolist()
    assert lookups > 0 and hits == lookups
    # sent again: the roots and the acting seats' rows, which the cache does not hold
    assert lookups == lookups0 and ev.rows - rows_first == rows_first - (lookups0 - hits0)


def test_a_model_swap_empties_the_cache_and_later_searches_see_the_new_model():
    vs = views(6)
    ev = RowEvaluator()
    search = Search(ev, SearchConfig(dets=2, sims=20))
    asyncio.run(search_all(search, vs))
    assert (search.cache.keys[:, 0] >= 0).any()
    ev.model_version = 1
    swapped = asyncio.run(search_all(search, vs))
    fresh_ev = RowEvaluator()
    fresh_ev.model_version = 1
    assert swapped == asyncio.run(search_all(Search(fresh_ev, SearchConfig(dets=2, sims=20, cache=0)), vs))
    assert search.cache.version == 1


def test_answers_overtaken_by_a_model_swap_are_used_but_not_kept():
    class SwapsWhileAsked(RowEvaluator):
        async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
            out = await super().evaluate_many(features, legal)
            self.model_version += 1
            return out

    ev = SwapsWhileAsked()
    search = Search(ev, SearchConfig(dets=2, sims=20))
    asyncio.run(search_all(search, views(3)))
    assert (search.cache.keys == -1).all()


def test_no_cache_without_a_model_version_or_when_turned_off():
    unversioned = RowEvaluator()
    del unversioned.model_version
    assert Search(unversioned, SearchConfig()).cache.size == 0
    assert Search(RowEvaluator(), SearchConfig(cache=0)).cache.size == 0
    assert Search(RowEvaluator(), SearchConfig(cache=1024)).cache.size == 1024


@pytest.mark.parametrize("size", [-1, 3, 1000])
def test_a_cache_size_not_a_power_of_two_is_refused_by_name(size):
    with pytest.raises(ConfigError, match="search.cache"):
        SearchConfig(cache=size)
    with pytest.raises(ValueError, match="power of two"):
        NetCache(size)


def test_concurrent_searches_sharing_one_search_see_what_each_sees_alone():
    """The searches of one Search share the buffer a wave's rows are written to: a wave's rows are
    copied by the evaluator before it awaits, so searches whose waves interleave get the answers
    to their own rows, as each would alone."""
    vs = views(8)
    cfg = SearchConfig(dets=3, sims=30, cache=0)
    alone = [asyncio.run(search_all(Search(RowEvaluator(), cfg), [v], seed=i))[0] for i, v in enumerate(vs)]
    shared = Search(RowEvaluator(), cfg)

    async def together() -> list[list[int]]:
        runs = (shared.run(v, np.random.default_rng([i, 0])) for i, v in enumerate(vs))
        return [r.visits for r in await asyncio.gather(*runs)]

    assert asyncio.run(together()) == alone
