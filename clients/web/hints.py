"""What the model thinks of a decision: per legal move, the network's prior, the search's share of
visits, and the expected round score.

The page shows these numbers beside the person's hand (a toggle) and again, after the round, at
each of the person's decisions in the replay. The model is a checkpoint named on the command line
(``blobnet web --model PATH[:dets=3,sims=30]``), never in a request. Its search asks the same kind
of ``servers.Batcher`` the network opponents use (``clients.players.batched``), made on the
server's event loop at first use, so the hints of every table batch together.
"""

from __future__ import annotations

import msgspec
import numpy as np

from blobnet.encode import value_scale
from blobnet.evaluator import Evaluator
from blobnet.player import NetworkPlayer, describe_player
from blobnet.rules import View
from blobnet.search import Search, SearchResult, choose_action
from clients.players import parse_player

__all__ = ["ActionHint", "Hint", "Hinter", "hint_of"]

SHARED_WAVES = 8  # the hint batcher's batch holds the waves of this many tables' searches at once


class ActionHint(msgspec.Struct, frozen=True):
    """The numbers of one legal move."""

    action: int  # the action id (RULES.md: a card 0..51, a bid 52 + b)
    prior: float  # the network's probability of the move, 0..1
    share: float  # the share of the search's visits that went through it, 0..1
    visits: int  # those visits, summed over the determinizations
    expected: float | None  # the mover's expected round score in points after it; None when not searched


class Hint(msgspec.Struct, frozen=True):
    """The model's view of one decision of the person."""

    actions: list[ActionHint]  # one per legal move, ascending action id
    choice: int  # the move the model would make: the most visited
    simulations: int  # simulations the search ran (0: a forced move, not searched)


def hint_of(result: SearchResult, cards: int) -> Hint:
    """The numbers of a finished search of a round of ``cards`` cards: its normalised values times
    the round's scale (``blobnet.encode.value_scale``) are points. A forced move (one legal action)
    is not searched: prior and share 1, no expected score."""
    total = sum(result.visits) or 1
    priors = result.priors or [1.0] * len(result.actions)
    values = result.values or [None] * len(result.actions)
    scale = value_scale(cards)
    actions = [
        ActionHint(action=a, prior=round(p, 4), share=round(n / total, 4), visits=n,
                   expected=None if v is None else round(v * scale, 2))
        for a, p, n, v in zip(result.actions, priors, result.visits, values)
    ]  # fmt: skip
    choice = choose_action(result, 0.0, np.random.default_rng(0))  # temperature 0 draws nothing
    return Hint(actions=actions, choice=choice, simulations=result.simulations)


class Hinter:
    """Searches the person's decisions with the model of ``spec``; ``name`` says which in the page."""

    def __init__(self, spec: str) -> None:
        player = parse_player(spec)
        if not isinstance(player, NetworkPlayer):
            raise ValueError(f"--model {spec!r}: give a checkpoint path (path or path:dets=3,sims=30), not a bot")
        self.player = player
        self.name = describe_player(player)
        self._evaluator: Evaluator | None = None
        self._search: Search | None = None

    def _searcher(self) -> Search:
        """The one Search of every table's hints, over a batcher made on the running loop."""
        if self._search is None:
            p = self.player
            self._evaluator = p.factory(p.model, Search.rows_per_wave(p.search) * SHARED_WAVES)
            self._search = Search(self._evaluator, p.search)
        return self._search

    async def think(self, view: View, rng: np.random.Generator) -> Hint:
        """The numbers of ``view``'s decision (the seat of ``view`` must be to play). ``rng`` is the
        table's: it draws the search's deals."""
        result = await self._searcher().run(view, rng)
        return hint_of(result, view.cards)

    async def aclose(self) -> None:
        """Close the batcher, if one was made."""
        evaluator, self._evaluator, self._search = self._evaluator, None, None
        if evaluator is not None:
            await evaluator.aclose()
