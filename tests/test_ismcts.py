"""The IS-MCTS baseline: the compiled search against a plain-Python IS-MCTS over the checked rules,
its strength against RandomBot, every table size, and its player spec."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from blobnet.bots import RandomBot
from blobnet.ismcts import SEES, ISMCTSBot, among_random
from blobnet.rules import Game, Round, View, choices, random_round
from blobnet.views import determinize
from clients.players import make_bot, parse_player


# -- the oracle: IS-MCTS written plainly over Round, views.determinize and Python's random ----------
class _Node:
    def __init__(self, action: int | None = None, parent: _Node | None = None, mover: int = -1) -> None:
        self.action, self.parent, self.mover = action, parent, mover
        self.children: list[_Node] = []
        self.total, self.visits, self.avail = 0.0, 0, 1


def _python_ismcts(view: View, sims: int, c: float, rng: np.random.Generator, pick: random.Random) -> Counter[int]:
    """Cowling, Powley and Whitehouse's SO-ISMCTS: the root actions' visits."""
    root = _Node()
    for _ in range(sims):
        node, r = root, determinize(view, rng)
        while r.legal():
            legal = r.legal()
            have = {ch.action for ch in node.children}
            untried = [a for a in legal if a not in have]
            if untried:
                a = pick.choice(untried)
                child = _Node(a, node, r.to_play)
                node.children.append(child)
                r.apply(a)
                node = child
                break
            options = [ch for ch in node.children if ch.action in legal]
            node = max(options, key=lambda ch: ch.total / ch.visits + c * math.sqrt(math.log(ch.avail) / ch.visits))
            for ch in options:
                ch.avail += 1
            r.apply(node.action)  # type: ignore[arg-type]
        while r.legal():
            r.apply(pick.choice(r.legal()))
        points = r.scores()
        while node is not None:
            node.visits += 1
            if node.parent is not None:
                node.total += points[node.mover]
            node = node.parent  # type: ignore[assignment]
    return Counter({ch.action: ch.visits for ch in root.children})  # type: ignore[misc]


def _position(tricks: int) -> Round:
    """4 x 5 with a trump after the bids and ``tricks`` tricks of each seat's lowest legal card;
    before any bid for ``tricks`` -1."""
    r = Round.deal(players=4, cards=5, trump=1, dealer=3, seed=11)
    if tricks < 0:
        return r
    for a in [53, 53, 52, 54]:  # bids 1, 1, 0, 2
        r.play(a)
    for _ in range(4 * tricks):
        r.play(r.legal_actions()[0])
    return r


@pytest.mark.parametrize("tricks", [-1, 2])
def test_the_compiled_search_visits_the_root_as_the_plain_python_one_does(tricks: int) -> None:
    r = _position(tricks)
    view = r.view(r.to_play)
    assert len(view.legal_actions()) >= 2
    runs, sims = 12, 300
    python: Counter[int] = Counter()
    rng, pick = np.random.default_rng(1), random.Random(2)
    for _ in range(runs):
        python.update(_python_ismcts(view, sims, 10.0, rng, pick))
    bot = ISMCTSBot(3, sims=sims)
    compiled: Counter[int] = Counter()
    for _ in range(runs):
        compiled.update(bot.root_visits(view))
    assert set(compiled) == set(python) == set(view.legal_actions())
    total = runs * sims
    for a in python:  # visit shares agree within 4 points (their spread is about 1 point here)
        assert abs(compiled[a] - python[a]) / total < 0.04, (a, compiled, python)


def test_root_visits_add_up_to_the_simulations_and_try_every_legal_action() -> None:
    r = random_round(5, 6, np.random.default_rng(4))
    view = r.view(r.to_play)
    visits = ISMCTSBot(0, sims=200).root_visits(view)
    assert sorted(visits) == view.legal_actions()
    assert sum(visits.values()) == 200
    assert sum(ISMCTSBot(0, sims=1).root_visits(view).values()) == 1


def test_a_forced_move_is_played_without_a_search() -> None:
    r = _position(2)
    while len(r.legal_actions()) != 1:
        r.play(r.legal_actions()[0])
    bot = ISMCTSBot(0, sims=10**9)  # a search would never end
    assert bot.act(r.view(r.to_play)) == r.legal_actions()[0]


def test_the_same_seed_plays_the_same_moves() -> None:
    def moves(seed: int) -> list[int]:
        r = random_round(4, 5, np.random.default_rng(9))
        bot, out = ISMCTSBot(seed, sims=100), []
        for seat in choices(r):
            out.append(bot.act(r.view(seat)))
            r.play(out[-1])
        return out

    assert moves(5) == moves(5)


@pytest.mark.parametrize("players", range(3, 9))
def test_every_table_size_in_a_full_game_with_no_trump_rounds(players: int) -> None:
    """A whole game of ismcts seats: every hand size of the schedule, the trump cycle with its
    no-trump rounds, the game context in every view; every move legal (Game.play checks)."""
    g = Game.new(players=players, start_cards=3 if players < 8 else 2, seed=players)
    bot = ISMCTSBot(players, sims=40)
    trumps = set()
    while not g.is_over:
        trumps.add(g.round.trump)
        seat = g.to_play
        assert seat is not None
        g.play(bot.act(g.view(seat)))
    assert None in trumps


def test_ismcts_is_a_real_baseline_against_three_random_bots() -> None:
    """Calibration at 4 x 5: 1,000 simulations score about 7.4 points a round (400 rounds: standard
    error 0.25) and 100 simulations about 6.3; a player that learned nothing would not beat 4. The
    same search seeing every hand scores about 9: what the hidden cards cost it."""
    strong = among_random(400, sims=1000).mean()
    weak = among_random(400, sims=100).mean()
    seeing = among_random(400, sims=1000, sees=SEES).mean()
    assert strong >= 7.0
    assert strong > weak
    assert seeing >= 8.5 and seeing > strong + 1


def test_the_calibration_names_what_its_seat_may_see() -> None:
    with pytest.raises(ValueError, match="sees=\\('hands',\\): name some of bids, plays"):
        among_random(1, sees=("hands",))
    assert among_random(3, sims=10, players=3, cards=2).shape == (3,)


def test_player_specs_build_the_baseline_with_its_settings() -> None:
    bot = parse_player("ismcts:sims=50,c=3", seed=1)
    assert isinstance(bot, ISMCTSBot) and (bot.sims, bot.c) == (50, 3.0)
    plain = parse_player(" ISMCTS ")
    assert isinstance(plain, ISMCTSBot) and (plain.sims, plain.c) == (1000, 10.0)
    assert isinstance(make_bot("random", 1), RandomBot)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ismcts:sims=0", "sims=0: give a whole number"),
        ("ismcts:sims=ten", "sims='ten' is not an integer"),
        ("ismcts:c=-1", "c=-1.0: give a finite"),
        ("ismcts:dets=3", "bad setting 'dets=3'; write key=value with keys sims, c"),
        ("random:sims=3", "bad setting 'sims=3'; it takes no settings"),
        ("nobody", "use one of random, heuristic, ismcts"),
    ],
)
def test_a_bad_bot_spec_is_named(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_bot(spec)
