"""The search against evaluators whose best answer is known, and against an exhaustive solver."""

from __future__ import annotations

import asyncio
import hashlib
from functools import cache

import numpy as np
import pytest

from blobnet.cards import BID0, N_ACTIONS, N_CARDS, N_VALUES
from blobnet.config import ConfigError, SearchConfig
from blobnet.encode import OFFSETS
from blobnet.evaluator import FreeEvaluator
from blobnet.rules import Round, View
from blobnet.search import Search, SearchResult, choose_action


class PlayedCardEvaluator:
    """Misleading priors, honest values: whichever seat has played ``card`` gets value 1, the rest
    0. The prior puts most weight on the lowest legal action, so only a search that reads
    the values finds ``card``."""

    def __init__(self, card: int) -> None:
        self.card = card
        self.calls = 0

    async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
        k = len(legal)
        self.calls += k
        priors = (legal * (0.4 / legal.sum(axis=1, keepdims=True))).astype(np.float32)
        priors[np.arange(k), legal.argmax(axis=1)] += 0.6  # argmax of a bool row: its lowest legal id
        values = np.zeros((k, 8), dtype=np.float32)
        played = features[:, OFFSETS["played_by"] : OFFSETS["played_by"] + 8 * N_CARDS].reshape(-1, 8, N_CARDS)
        for row in range(k):
            owners = np.nonzero(played[row, :, self.card])[0]
            if len(owners):
                values[row, int(owners[0])] = 1.0
        await asyncio.sleep(0)  # suspend, as a real batcher does (the answers were made before it)
        return priors, values


def leader_round() -> Round:
    r = Round.deal(players=4, cards=5, trump=None, dealer=3, seed=11)
    for _ in range(4):  # everyone bids 1: legal for the dealer too (total 4 != 5)
        r.play(BID0 + 1)
    return r


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_search_finds_the_valuable_card_against_a_misleading_prior():
    r = leader_round()
    seat = r.to_play
    target = r.hands[seat][-1]  # the prior points at the lowest card instead
    ev = PlayedCardEvaluator(target)
    result = run(Search(ev, SearchConfig(dets=2, sims=40)).run(r.view(seat), np.random.default_rng(0)))
    assert choose_action(result, 0, np.random.default_rng(0)) == target
    assert result.visits[result.actions.index(target)] > sum(result.visits) / 2


def test_result_reports_each_actions_root_prior_and_mean_value_for_the_searcher():
    r = leader_round()
    seat = r.to_play
    target = r.hands[seat][-1]
    result = run(Search(PlayedCardEvaluator(target), SearchConfig(dets=2, sims=40)).run(r.view(seat),
                 np.random.default_rng(0)))  # fmt: skip
    assert result.priors is not None and result.values is not None
    k = len(result.actions)
    assert result.priors == pytest.approx([0.6 + 0.4 / k] + [0.4 / k] * (k - 1))  # the evaluator's, unnoised
    i = result.actions.index(target)
    assert result.values[i] == pytest.approx(1.0)  # every simulation through it: the searcher played it
    others = [v for j, v in enumerate(result.values) if j != i and v is not None]
    assert others and max(others) < 1.0


def test_forced_decision_is_not_searched():
    r = leader_round()
    r.play(r.legal_actions()[0])
    # seat to play now follows suit; give it a view with exactly one legal card
    v = r.view(r.to_play)
    forced = View(**{f: getattr(v, f) for f in View.__dataclass_fields__ if f != "hand"}, hand=(v.legal_actions()[0],))
    ev = PlayedCardEvaluator(0)
    result = run(Search(ev, SearchConfig()).run(forced, np.random.default_rng(0)))
    assert ev.calls == 0 and result.actions == [v.legal_actions()[0]] and result.simulations == 0


def test_first_batch_is_not_copies_of_the_root():
    """Every leaf sent while the first simulations are in flight is a different position."""
    waves: list[list[bytes]] = []

    class Recorder(FreeEvaluator):
        async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
            waves.append([row.tobytes() for row in features])
            out = await super().evaluate_many(features, legal)  # reads its arrays before its first await
            await asyncio.sleep(0)
            return out

    r = leader_round()
    cfg = SearchConfig(dets=1, sims=8, leaves=4, root_view=False)
    run(Search(Recorder(), cfg).run(r.view(r.to_play), np.random.default_rng(1)))
    (root,), first_wave = waves[0], waves[1]
    assert root not in first_wave
    assert len(first_wave) == 4 and len(set(first_wave)) == 4


def test_the_search_sends_each_rows_legal_mask_and_reads_its_priors_at_those_ids():
    """The root's mask is its legal actions; every leaf row has one; a prior put on the highest legal
    id of each row draws the first visit there (read back at the row's own ids, not another's)."""
    masks: list[np.ndarray] = []

    class Highest(FreeEvaluator):
        async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
            masks.append(legal.copy())
            k = len(legal)
            top = N_ACTIONS - 1 - legal[:, ::-1].argmax(axis=1)  # each row's highest legal id
            priors = np.where(legal, 0.01, 0.0).astype(np.float32)
            priors[np.arange(k), top] = 1.0
            priors /= priors.sum(axis=1, keepdims=True)
            await asyncio.sleep(0)
            return priors, np.full((k, N_VALUES), 0.5, dtype=np.float32)

    r = leader_round()
    view = r.view(r.to_play)
    result = run(Search(Highest(), SearchConfig(dets=1, sims=1, leaves=1)).run(view, np.random.default_rng(0)))
    assert masks[0].shape == (1, N_ACTIONS) and np.flatnonzero(masks[0][0]).tolist() == view.legal_actions()
    assert result.visits == [0] * (len(result.actions) - 1) + [1]  # the highest legal card
    run(Search(Highest(), SearchConfig(dets=2, sims=12, leaves=3)).run(view, np.random.default_rng(1)))
    assert all(m.dtype == np.bool_ and m.any(axis=1).all() for m in masks)


class TwoViewsEvaluator(FreeEvaluator):
    """Values that depend on who looks: seen from a row holding the searcher's cards, the seat
    that played ``target`` gets 1; seen from any other seat, the seat that played ``decoy`` does."""

    def __init__(self, searcher_hand: list[int], target: int, decoy: int) -> None:
        super().__init__()
        self.hand = np.zeros(N_CARDS, bool)
        self.hand[searcher_hand] = True
        self.target, self.decoy = target, decoy
        self.own_rows = 0

    async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
        # The caller may reuse its arrays once this call awaits: read them first.
        hands = features[:, OFFSETS["hand"] : OFFSETS["hand"] + N_CARDS] > 0
        played = features[:, OFFSETS["played_by"] : OFFSETS["played_by"] + 8 * N_CARDS].reshape(-1, 8, N_CARDS)
        values = np.zeros((len(features), 8), dtype=np.float32)
        for row in range(len(features)):
            own = not (hands[row] & ~self.hand).any()
            self.own_rows += own
            owners = np.nonzero(played[row, :, self.target if own else self.decoy])[0]
            if len(owners):
                values[row, int(owners[0])] = 1.0
        priors, _ = await super().evaluate_many(features, legal)
        return priors, values


@pytest.mark.parametrize("root_view", [True, False])
def test_the_searchers_moves_are_valued_from_its_own_view(root_view):
    """A leaf where another seat acts is evaluated once more from the searching seat's view, and
    the searcher's moves are valued by that row (which holds its hand), not by the acting seat's."""
    r = leader_round()
    seat = r.to_play
    hand = list(r.hands[seat])
    target, decoy = hand[-1], hand[0]
    ev = TwoViewsEvaluator(hand, target, decoy)
    search = Search(ev, SearchConfig(dets=1, sims=30, leaves=1, root_view=root_view))
    result = run(search.run(r.view(seat), np.random.default_rng(3)))
    assert choose_action(result, 0, np.random.default_rng(0)) == (target if root_view else decoy)
    # with root_view the searcher sees the root and every leaf (its extra row, or its own turn)
    searcher_rows = 1 + result.simulations
    assert (ev.own_rows == searcher_rows) if root_view else (ev.own_rows < searcher_rows)


class HandRecorder(FreeEvaluator):
    """Records the hand and the to_play field of every row it is asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[frozenset[int], int]] = []

    async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
        for row in features:
            hand = frozenset(np.nonzero(row[OFFSETS["hand"] : OFFSETS["hand"] + N_CARDS])[0].tolist())
            self.rows.append((hand, int(np.argmax(row[OFFSETS["to_play"] : OFFSETS["to_play"] + 8]))))
        return await super().evaluate_many(features, legal)


def test_one_search_serving_many_games_looks_from_each_searchers_own_seat():
    """The self-play engine shares one Search among its games: each search's extra rows must be
    its own seat's view, whatever the other searches in flight."""
    r = leader_round()
    first = r.to_play
    second_round = r.clone()
    second_round.apply(second_round.legal()[-1])  # the next seat is to act in the second round
    views = [r.view(first), second_round.view(second_round.to_play)]
    ev = HandRecorder()
    search = Search(ev, SearchConfig(dets=2, sims=12, leaves=3))

    async def both() -> None:
        await asyncio.gather(*(search.run(v, np.random.default_rng(i)) for i, v in enumerate(views)))

    run(both())
    hands = [frozenset(v.hand) for v in views]
    onlooking = [hand for hand, to_play in ev.rows if to_play != 0]  # rows of a seat that is not to act
    assert len(onlooking) > 12
    assert all(any(hand <= h for h in hands) for hand in onlooking)
    assert all(any(hand <= h for hand in onlooking) for h in hands)  # both searches asked


def test_visit_counts_sum_over_determinizations():
    r = leader_round()
    cfg = SearchConfig(dets=3, sims=20, leaves=2)
    result = run(Search(FreeEvaluator(), cfg).run(r.view(r.to_play), np.random.default_rng(2)))
    assert sum(result.visits) == cfg.dets * cfg.sims
    assert result.simulations == cfg.dets * cfg.sims
    assert abs(sum(result.policy()) - 1) < 1e-9


def test_the_searchs_counts_grow_wave_by_wave_before_its_end():
    """A benchmark's window may be shorter than one search (hundreds of games on one slow
    evaluator): the Search's counts must move with each wave, and end where the result says."""
    r = leader_round()
    cfg = SearchConfig(dets=2, sims=12, leaves=3)
    seen: list[tuple[int, int]] = []

    class Watching(FreeEvaluator):
        async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
            seen.append((search.simulations, search.evaluations))
            return await super().evaluate_many(features, legal)

    search = Search(Watching(), cfg)
    result = run(search.run(r.view(r.to_play), np.random.default_rng(3)))
    sims = [s for s, _ in seen]
    assert sims[0] == 0 and sims == sorted(sims) and 0 < sims[-1] < result.simulations
    assert [e for _, e in seen] == sorted(e for _, e in seen) and seen[1][1] == 1  # the root's row, then the waves'
    assert (search.simulations, search.evaluations) == (result.simulations, result.evaluations)
    assert result.simulations == cfg.dets * cfg.sims


class ContentEvaluator(FreeEvaluator):
    """Answers that depend on a row's content alone, drawn from a hash of its features, one row at a
    time (a batch of other rows changes nothing); every row asked for is kept in ``rows``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[bytes] = []

    async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
        priors = np.zeros(legal.shape, np.float32)
        values = np.zeros((len(features), N_VALUES), np.float32)
        for i, row in enumerate(features):
            self.rows.append(row.tobytes())
            rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest()))
            p = np.where(legal[i], rng.random(N_ACTIONS) + 0.01, 0.0)
            priors[i] = p / p.sum()
            values[i] = rng.random(N_VALUES)
        await asyncio.sleep(0)
        return priors, values


def positions() -> list[Round]:
    """Positions of 3, 4 and 5 players, bidding and playing, late ones with a few legal moves."""
    out = []
    for seed, players in enumerate([3, 4, 5, 4]):
        r = Round.deal(players=players, cards=5, trump=None if seed == 3 else seed % 4, dealer=0, seed=seed)
        rng = np.random.default_rng(seed)
        for moves in (0, players + 2, 3 * players):  # the bids, two cards, two tricks
            while len(r.legal()) < 2 or sum(b is not None for b in r.bids) + len(r.played) < moves:  # then a choice
                r.play(int(rng.choice(r.legal())))
            out.append(r.clone())
    return out


@pytest.mark.parametrize(("dets", "sims"), [(3, 30), (2, 4)])
def test_a_last_wave_sends_only_the_rows_it_reads_and_the_search_is_unchanged(dets, sims):
    """In a tree's last wave a leaf sends its own-view row alone (its priors and the other seats'
    values would never be read), and where a collision holds a descent over after all, the tree's
    leaves of that wave get their acting rows then. The result is the same as a search that sends
    every row. At 4 simulations of 4 leaves every wave is a last one until it collides."""
    sent = [0, 0]
    collided = 0
    for r in positions():
        results, asked = [], []
        for lazy in (True, False):
            ev = ContentEvaluator()
            search = Search(ev, SearchConfig(dets=dets, sims=sims, leaves=4))
            search.lazy = lazy
            res = run(search.run(r.view(r.to_play), np.random.default_rng(5)))
            results.append((res.visits, res.values, res.root_value, res.simulations))
            asked.append(ev.rows)
            collided += search.collisions if lazy else 0
        assert results[0] == results[1]
        assert set(asked[0]) <= set(asked[1])
        sent = [sent[0] + len(asked[0]), sent[1] + len(asked[1])]
    assert sent[0] < sent[1]
    assert collided > 0


def test_dirichlet_noise_changes_root_priors_only_when_asked():
    r = leader_round()
    view = r.view(r.to_play)
    cfg = SearchConfig(dets=1, sims=30, leaves=1)
    plain = [run(Search(FreeEvaluator(), cfg).run(view, np.random.default_rng(0))).visits for _ in range(2)]
    noisy = [run(Search(FreeEvaluator(), cfg).run(view, np.random.default_rng(s), noise=True)).visits for s in range(3)]
    assert plain[0] == plain[1]
    assert len({tuple(v) for v in noisy}) > 1


def test_temperature_zero_picks_most_visited_and_positive_temperature_samples():
    res = SearchResult([1, 2, 3], [5, 30, 5], 0, 40)
    assert choose_action(res, 0, np.random.default_rng(0)) == 2
    picks = {choose_action(res, 1.0, np.random.default_rng(s)) for s in range(50)}
    assert picks == {1, 2, 3}


def test_completed_q_target_moves_the_prior_toward_better_values_and_keeps_it_where_values_agree():
    # visited actions valued 0.6 and 0.9, the third never visited: the target favours the better one
    res = SearchResult([1, 2, 3], [20, 10, 0], 0, 30, None, [0.5, 0.3, 0.2], [0.6, 0.9, None], 0.7)
    target = res.completed_q_policy()
    assert sum(target) == pytest.approx(1.0)
    assert target[1] > 0.5 > res.policy()[1]  # visit shares would have taught the worse action
    # the unvisited action takes the mixed value: (root + 30 x prior-weighted mean) / 31
    mixed = (0.7 + 30 * (0.5 * 0.6 + 0.3 * 0.9) / 0.8) / 31
    logits = np.log([0.5, 0.3, 0.2]) + (50 + 20) * 0.1 * np.array([0.6, 0.9, mixed])
    assert target == pytest.approx((np.exp(logits) / np.exp(logits).sum()).tolist())
    # equal values everywhere (the unvisited one completed by the same value): the prior itself
    flat = SearchResult([1, 2, 3], [20, 10, 0], 0, 30, None, [0.5, 0.3, 0.2], [0.6, 0.6, None], 0.6)
    assert flat.completed_q_policy() == pytest.approx([0.5, 0.3, 0.2])
    # a forced move carries no search: its target is the one action
    assert SearchResult([7], [1], 0, 0).completed_q_policy() == [1.0]


def test_a_searched_result_carries_the_root_value_the_completed_q_target_needs():
    r = leader_round()
    seat = r.to_play
    result = run(Search(FreeEvaluator(), SearchConfig(dets=2, sims=10)).run(r.view(seat), np.random.default_rng(0)))
    assert result.root_value is not None
    assert sum(result.completed_q_policy()) == pytest.approx(1.0)


def test_search_settings_out_of_range_are_refused_by_name():
    for kwargs, name in [({"sims": 0}, "search.sims"), ({"dets": 0}, "search.dets"), ({"leaves": 0}, "search.leaves"),
                         ({"policy_target": "gumbel"}, "search.policy_target")]:  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            SearchConfig(**kwargs)


def test_search_refuses_a_view_whose_seat_is_not_to_play():
    r = leader_round()
    with pytest.raises(ValueError, match="not to play"):
        run(Search(FreeEvaluator(), SearchConfig()).run(r.view((r.to_play + 1) % 4), np.random.default_rng(0)))


# -- endgames against an exhaustive solver --------------------------------------------------------


def solve(r: Round) -> dict[int, float]:
    """Every legal action's value for the seat to play when every seat, knowing all hands,
    maximises its own round score; a seat indifferent between moves picks among them uniformly."""

    @cache
    def value(key: tuple) -> tuple[float, ...]:  # type: ignore[type-arg]
        return _values(states[key])

    states: dict[tuple, Round] = {}  # type: ignore[type-arg]

    def key_of(s: Round) -> tuple:  # type: ignore[type-arg]
        k = (tuple(s.masks), tuple(s.tricks_won), tuple(s.trick), s.to_play)
        states[k] = s
        return k

    def _values(s: Round) -> tuple[float, ...]:
        if s.to_play is None:
            return tuple(float(x) for x in s.scores())
        seat = s.to_play
        options = []
        for a in s.legal():
            t = s.clone()
            t.apply(a)
            options.append(value(key_of(t)))
        best = max(o[seat] for o in options)
        top = [o for o in options if o[seat] >= best - 1e-9]
        return tuple(sum(o[i] for o in top) / len(top) for i in range(s.players))

    out = {}
    for a in r.legal():
        t = r.clone()
        t.apply(a)
        out[a] = value(key_of(t))[r.to_play]
    return out


def endgame(rng: np.random.Generator) -> Round:
    """A random position with 1 to 3 cards left in each hand, bids already made."""
    players = int(rng.integers(3, 6))
    left = int(rng.integers(1, 4))
    cards = left + int(rng.integers(0, 3))
    r = Round.deal(players=players, cards=cards, trump=[0, 1, 2, 3, None][int(rng.integers(5))],
                   dealer=int(rng.integers(players)), rng=rng)  # fmt: skip
    while r.phase == "bid":
        legal = r.legal()
        r.apply(legal[int(rng.integers(len(legal)))])
    while r.masks[r.to_play].bit_count() > left or (r.trick and rng.random() < 0.5):
        legal = r.legal()
        r.apply(legal[int(rng.integers(len(legal)))])
        if r.to_play is None:
            break
    return r


def test_endgame_choices_match_an_exhaustive_solver():
    rng = np.random.default_rng(2024)
    agree = total = 0
    cfg = SearchConfig(dets=1, sims=200, leaves=4)
    while total < 60:
        r = endgame(rng)
        if r.to_play is None or len(r.legal()) < 2:
            continue
        values = solve(r)
        best = max(values.values())
        truth = r.clone()
        search = Search(FreeEvaluator(), cfg, deal=lambda view, g, truth=truth: truth.clone())
        result = run(search.run(r.view(r.to_play), np.random.default_rng(total)))
        pick = choose_action(result, 0, rng)
        agree += values[pick] >= best - 1e-9
        total += 1
    assert agree / total >= 0.95, f"search agreed with the solver on {agree}/{total} endgames"


def test_solver_sees_a_forced_win():
    # 3 players, 1 card each, no trump: seat 0 leads the ace and must make its bid of 1
    hands = [[12], [0], [1]]
    r = Round.deal(players=3, cards=1, trump=None, dealer=2, hands=hands)
    for b in (1, 0, 1):
        r.play(BID0 + b)
    assert solve(r) == {12: 11.0}


def _nan_at(k: int, which: str) -> tuple[np.ndarray, np.ndarray]:
    priors, values = np.full((k, N_ACTIONS), 0.1, np.float32), np.full((k, N_VALUES), 0.5, np.float32)
    (priors if which == "priors" else values)[k - 1, 0] = np.inf if which == "priors" else np.nan
    return priors, values


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        (lambda k: (np.full((k, N_ACTIONS), 0.1, np.float32), np.full((k, N_VALUES), np.nan, np.float32)), "values"),
        (lambda k: (np.full((k, 3), 0.1, np.float32), np.zeros((k, N_VALUES), np.float32)), "priors"),
        (lambda k: (np.zeros((k, N_ACTIONS), np.float64), np.zeros((k, N_VALUES), np.float32)), "priors"),
        (lambda k: (np.zeros((k + 1, N_ACTIONS), np.float32), np.zeros((k + 1, N_VALUES), np.float32)), "priors"),
        (lambda k: _nan_at(k, "priors"), "priors"),
        (lambda k: _nan_at(k, "values"), "values"),
    ],
)
@pytest.mark.parametrize("at_root", [True, False])
def test_a_bad_answer_from_an_evaluator_is_refused_by_name_before_a_kernel_reads_it(answer, named, at_root):
    # at the root (checked in Python) or in a later wave (the NaN and inf checked by the backup kernel)
    class Bad(FreeEvaluator):
        calls = 0

        async def evaluate_many(self, features, legal):  # type: ignore[no-untyped-def]
            self.calls += 1
            if not at_root and self.calls == 1:
                return await super().evaluate_many(features, legal)
            return answer(len(legal))

    r = leader_round()
    with pytest.raises(ValueError, match=f"evaluator's {named}"):
        run(Search(Bad(), SearchConfig(dets=2, sims=8)).run(r.view(r.to_play), np.random.default_rng(0)))
