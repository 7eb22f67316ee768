"""One table in the browser: a person in one seat, players in the others, a single round or a
whole game on the standard schedule (RULES.md).

The rules engine referees every move: the person's move is checked by ``Round.play`` and a refusal
carries the rules' reason (``IllegalMove``); the other seats' moves are asked of their players
on the server's event loop when they can wait there (a network player's searches go through its
batcher), on a worker thread otherwise. A move request returns only once the other seats have moved up to the
person's next turn or the round's end; the state then lists every move of the round, so the page
can show the others' moves one by one.

What the person is sent is their seat's view (``Round.view``) plus what is public; the other
hands are shown only in the replay of a round that is over. When a model is loaded
(``clients.web.hints``), each decision of the person is searched as it arises, so the numbers
are there for the hint toggle and for the replay.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec
import numpy as np

from blobnet.player import AsyncPlayer, Player
from blobnet.rules import Game, IllegalMove, View, check_table, random_round, standard_schedule
from clients.web.hints import Hint, Hinter

__all__ = ["Mode", "NotYourTurn", "RoundRecord", "Table", "TableState", "for_people"]

Mode = Literal["round", "game"]
DEFAULT_ROUND_CARDS = 5


class NotYourTurn(ValueError):
    """A request that does not fit the table's moment: another seat is to play, the round or the
    game is over, or another request of the same table is being answered."""


class RoundRecord(msgspec.Struct):
    """A round as it was played, shown whole once it is over: the deal and every move, with the
    model's numbers at each decision of the person."""

    index: int  # the round's place in the game (0 for a single round)
    players: int
    cards: int
    trump: int | None  # suit 0..3 (S H C D) or None (no trump)
    dealer: int
    hands: list[list[int]]  # every seat's cards as dealt
    moves: list[tuple[int, int]] = []  # (seat, action id) in order
    hints: list[Hint | None] = []  # per move: the model's numbers for the person's decisions
    bids: list[int] = []
    tricks_won: list[int] = []
    trick_winners: list[int] = []
    scores: list[int] = []


class TableState(msgspec.Struct):
    """What the page is sent: the person's view of the table and what is public."""

    id: str
    mode: Mode
    players: int
    seat: int  # the person's
    names: list[str]  # per seat
    round_index: int
    rounds: int  # rounds in the table's schedule (1 for a single round)
    cards: int
    trump: int | None
    dealer: int
    phase: str  # "bid", "play" or "over" (the current round)
    to_play: int | None
    hand: list[int]
    legal: list[int]  # the person's legal actions; [] when another seat is to play
    bids: list[int | None]
    tricks_won: list[int]
    trick: list[tuple[int, int]]  # the trick in progress as (seat, card)
    trick_winners: list[int]
    moves: list[tuple[int, int]]  # every move of this round so far, (seat, action)
    scores: list[int] | None  # this round's, once it is over
    totals: list[int]  # over the finished rounds, this one included once it is over
    finished: int  # rounds over
    over: bool  # the table is done: no more moves, no next round
    winners: list[int] | None  # seats with the highest total once the table is done
    hint: Hint | None  # the model's numbers for the person's decision now
    model: bool  # whether a model gives hints


async def _decide(player: Player, view: View) -> int:
    """A player with ``aact`` waits on this loop (a network player: its batcher batches every
    table's searches); any other thinks on a worker thread, so a slow one (the IS-MCTS baseline
    searches for seconds) stalls neither the other tables nor the page. Each table has its own
    instance of such a player (``clients.web.server``), so no two threads share one."""
    if isinstance(player, AsyncPlayer):
        return int(await player.aact(view))
    return int(await asyncio.to_thread(player.act, view))


def for_people(message: str, seat: int) -> str:
    """The rules' refusal said to the person: "you" for their seat, moves without their action ids."""
    message = re.sub(r" \(\d+\)", "", message)
    return message.replace(f"seat {seat} may not", "you may not").replace("not in its hand", "not in your hand")


class Table:
    """A table of ``players`` seats: the person in ``seat``, ``opponents[s]`` in every other seat
    (None at the person's). ``mode`` "round" plays one round of ``cards`` cards with a random trump
    and dealer; "game" the standard schedule starting at ``cards`` (None: RULES.md's default).
    ``rng`` (the table's own) deals and draws the hint searches' deals; ``clock`` stamps its use."""

    def __init__(
        self,
        *,
        id: str,
        owner: str,
        players: int,
        seat: int,
        opponents: Sequence[Player | None],
        names: Sequence[str],
        mode: Mode,
        cards: int | None,
        rng: np.random.Generator,
        hinter: Hinter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= seat < players:
            raise ValueError(f"seat {seat}: the person's seat must be 0..{players - 1}")
        if len(opponents) != players or len(names) != players:
            raise ValueError(f"{players} players need {players} seats and names")
        self.id, self.owner, self.players, self.seat, self.mode = id, owner, players, seat, mode
        self.opponents = list(opponents)
        self.names = list(names)
        self.rng = rng
        self.hinter = hinter
        self.clock = clock
        self.used = clock()
        self.lock = asyncio.Lock()
        self.records: list[RoundRecord] = []
        self.hint: Hint | None = None
        if mode == "game":
            self.game: Game | None = Game(players=players, schedule=standard_schedule(players, cards), rng=rng)
            self.round = self.game.round
        else:
            cards = DEFAULT_ROUND_CARDS if cards is None else cards
            check_table(players, cards)
            self.game = None
            self.round = random_round(players, cards, rng)
        self.record = self._new_record()

    # -- what the person may do ------------------------------------------------------------------
    async def start(self) -> None:
        """The other seats move up to the person's first turn."""
        async with self._turn():
            await self._proceed()

    async def move(self, action: object) -> None:
        """The person's ``action``: NotYourTurn when it is not their turn, IllegalMove (the rules'
        reason, said to the person) when the rules refuse it; the table is then unchanged."""
        async with self._turn():
            r = self.round
            if r.to_play is None:
                raise NotYourTurn("the round is over: no move is legal")
            if r.to_play != self.seat:
                raise NotYourTurn(f"it is {self.names[r.to_play]}'s turn (seat {r.to_play}), not yours")
            if not isinstance(action, int) or isinstance(action, bool):
                raise IllegalMove(f"action {action!r} is not an integer action id 0..69")
            try:
                r.play(action)
            except IllegalMove as e:
                raise IllegalMove(for_people(str(e), self.seat)) from None
            self._record(self.seat, action, self.hint)
            await self._proceed()

    async def next_round(self) -> None:
        """In a game whose round is over, deal the next one; NotYourTurn otherwise."""
        async with self._turn():
            if self.game is None or self.game.is_over:
                raise NotYourTurn("there is no next round: the table is done")
            if self.round.to_play is not None:
                raise NotYourTurn("the round is not over yet")
            self.game.advance()
            self.round = self.game.round
            self.record = self._new_record()
            await self._proceed()

    # -- the table's moves -----------------------------------------------------------------------
    def _turn(self) -> asyncio.Lock:
        """The table's lock, refused at once when held: a second click while the first is answered."""
        if self.lock.locked():
            raise NotYourTurn("the table is still answering your last request")
        self.used = self.clock()
        return self.lock

    async def _proceed(self) -> None:
        """The other seats move until the person's turn or the round's end; then the person's
        decision is searched for hints, or the finished round recorded."""
        self.hint = None
        r = self.round
        while r.to_play is not None and r.to_play != self.seat:
            seat = r.to_play
            player = self.opponents[seat]
            assert player is not None  # only the person's seat has none
            action = await _decide(player, r.view(seat))
            r.play(action)  # a player's illegal move is a bug: IllegalMove surfaces as a server error
            self._record(seat, action, None)
        if r.to_play == self.seat and self.hinter is not None:
            self.hint = await self.hinter.think(r.view(self.seat), self.rng)
        if r.to_play is None:
            self._finish()
        self.used = self.clock()

    def _new_record(self) -> RoundRecord:
        r = self.round
        index = 0 if self.game is None else self.game.round_index
        hands = [list(h) for h in r.hands]
        return RoundRecord(index=index, players=r.players, cards=r.cards, trump=r.trump, dealer=r.dealer, hands=hands)

    def _record(self, seat: int, action: int, hint: Hint | None) -> None:
        self.record.moves.append((seat, action))
        self.record.hints.append(hint)

    def _finish(self) -> None:
        """Score the round into its record; the last round of a game also ends the game."""
        r, rec = self.round, self.record
        rec.bids = [int(b) for b in r.bids if b is not None]
        rec.tricks_won = list(r.tricks_won)
        rec.trick_winners = list(r.trick_winners)
        rec.scores = r.scores()
        self.records.append(rec)
        if self.game is not None and self.game.round_index == len(self.game.schedule) - 1:
            self.game.advance()  # the game's totals and is_over; no round is dealt after the last

    # -- what the person is shown ----------------------------------------------------------------
    @property
    def over(self) -> bool:
        """No more moves: a single round that has ended, or a game after its last round."""
        if self.game is not None:
            return self.game.is_over
        return self.round.to_play is None

    def totals(self) -> list[int]:
        return [sum(rec.scores[s] for rec in self.records) for s in range(self.players)]

    def state(self) -> TableState:
        r = self.round
        v = r.view(self.seat)
        totals = self.totals()
        best = max(totals)
        schedule = self.game.schedule if self.game is not None else (r.cards,)
        return TableState(
            id=self.id, mode=self.mode, players=self.players, seat=self.seat, names=self.names,
            round_index=self.record.index, rounds=len(schedule), cards=r.cards, trump=r.trump, dealer=r.dealer,
            phase=v.phase, to_play=v.to_play, hand=list(v.hand), legal=v.legal_actions(), bids=list(v.bids),
            tricks_won=list(v.tricks_won), trick=list(v.trick), trick_winners=list(v.trick_winners),
            moves=list(self.record.moves), scores=r.scores() if r.to_play is None else None, totals=totals,
            finished=len(self.records), over=self.over,
            winners=[s for s, t in enumerate(totals) if t == best] if self.over else None,
            hint=self.hint, model=self.hinter is not None,
        )  # fmt: skip

    def replay(self, index: int | None) -> RoundRecord:
        """The record of finished round ``index`` (None: the last finished); ValueError naming the
        rounds there are."""
        if not self.records:
            raise ValueError("no round of this table is over yet")
        if index is None:
            return self.records[-1]
        if not 0 <= index < len(self.records):
            raise ValueError(f"round {index}: the finished rounds are 0..{len(self.records) - 1}")
        return self.records[index]
