"""Policy-based inference from the bids: the position of a past bid, and deals kept by how likely
their bids are."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from blobnet.cards import N_ACTIONS
from blobnet.config import SearchConfig
from blobnet.encode import OFFSETS
from blobnet.evaluator import FreeEvaluator
from blobnet.infer import bid_position, bidders, keep_likely
from blobnet.position import HAND, STATE, pack
from blobnet.rules import Round, random_round
from blobnet.search import Search


@pytest.mark.parametrize(("players", "cards", "seed"), [(4, 5, 0), (3, 7, 1), (6, 4, 2), (8, 6, 3)])
def test_bid_position_is_the_round_as_it_was_when_that_seat_bid(players: int, cards: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    r = random_round(players, cards, rng)
    start = r.clone()
    bids_made: list[int] = []
    while r.phase == "bid":
        a = int(rng.choice(r.legal_actions()))
        bids_made.append(a)
        r.play(a)
    for _ in range(int(rng.integers(0, players * (cards - 1)))):  # some tricks, one cut off mid-trick
        r.play(int(rng.choice(r.legal_actions())))
    later = pack(r)
    then = start.clone()
    out = np.empty(STATE, np.int64)
    for a in bids_made:
        seat = then.to_play
        assert seat is not None
        bid_position(later, seat, out)
        assert out.tolist() == pack(then).tolist(), f"seat {seat}"
        then.play(a)


def test_keep_likely_keeps_the_likely_deals_without_repeating_one() -> None:
    target = np.array([52, 53, 52, 53, 52, 53], np.int64)  # 3 deals x 2 bidders
    priors = np.full((6, N_ACTIONS), 1e-9, np.float32)
    priors[[2, 3], target[[2, 3]]] = 1.0  # deal 1: both bids certain
    priors[[4], target[[4]]] = 1.0  # deal 2: one bid certain, the other unlikely
    for seed in range(20):
        kept = keep_likely(priors, target, 3, 2, np.random.default_rng(seed))
        assert sorted(kept.tolist()) == [1, 2]


class AceRevealer(FreeEvaluator):
    """A network that finds any bid likely from a hand holding the ace of spades and unlikely from
    any other: a bid then says where that ace is."""

    async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
        priors, values = await super().evaluate_many(features, legal)
        ace = features[:, OFFSETS["hand"] + 12] > 0
        priors[~ace] *= 1e-6
        return priors, values


def test_the_kept_deals_put_the_cards_where_the_bids_say() -> None:
    r = Round.deal(players=4, cards=5, trump=None, dealer=0, seed=5)
    while r.phase == "bid":
        r.play(r.legal_actions()[0])
    seat = r.to_play
    assert seat is not None and 12 not in r.view(seat).hand

    def aces_with_a_bidder(infer: int) -> float:
        search = Search(AceRevealer(), SearchConfig(dets=4, sims=4, infer=infer))
        found = 0
        for i in range(10):
            asyncio.run(search.run(r.view(seat), np.random.default_rng(i)))
            roots = search._free[0].roots[:4]
            who = bidders(roots[0], seat)
            found += sum(any(root[HAND + s] >> 12 & 1 for s in who) for root in roots)
        return found / 40

    # uniform deals give the ace to one of the 3 others about 15 times in 47; inferred ones always
    assert aces_with_a_bidder(1) < 0.6
    assert aces_with_a_bidder(8) == 1.0


class Recorder(FreeEvaluator):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[int] = []

    async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
        self.requests.append(len(features))
        return await super().evaluate_many(features, legal)


def test_a_search_with_inference_asks_once_for_every_bid_of_every_candidate() -> None:
    r = Round.deal(players=5, cards=4, trump=2, dealer=1, seed=8)
    while r.phase == "bid":
        r.play(r.legal_actions()[-1])
    cfg = SearchConfig(dets=2, sims=6, infer=3)
    ev = Recorder()
    result = asyncio.run(Search(ev, cfg).run(r.view(r.to_play), np.random.default_rng(0)))  # type: ignore[arg-type]
    assert ev.requests[1] == 2 * 3 * 4  # after the root: 6 candidate deals x 4 other bidders
    assert result.evaluations == sum(ev.requests)
    assert max(ev.requests) <= Search.rows_per_wave(cfg)
