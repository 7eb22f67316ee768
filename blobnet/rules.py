"""The rules of Blob (RULES.md): a single round, a whole game, and what a seat may see.

Two layers, as in KataGo's board: ``Round.play`` checks every move and raises ``IllegalMove``
saying why, then calls ``Round.apply``, the unchecked fast path the search uses together with
``clone`` and ``legal``. Hands are 52-bit masks and cards small ints throughout.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from blobnet.cards import (
    BID0,
    MAX_PLAYERS,
    MIN_PLAYERS,
    N_ACTIONS,
    N_CARDS,
    SUIT_MASKS,
    action_str,
    beats,
    card_str,
    cards_of,
    mask_of,
    winning,
)

__all__ = [
    "IllegalMove", "Round", "Game", "View", "GameContext", "standard_schedule", "legal_actions_of",
    "random_round", "choices", "check_table", "TRUMP_CYCLE",
]  # fmt: skip

TRUMP_CYCLE = (0, 1, 2, 3, None)  # trump of round r is TRUMP_CYCLE[r % 5]; None is no-trump


class IllegalMove(ValueError):
    """A move the rules do not allow; the message says why and what would be legal."""


@dataclass(frozen=True, slots=True)
class GameContext:
    """What a round inside a game adds to a seat's knowledge: the running totals before it."""

    totals: tuple[int, ...]
    round_index: int
    schedule: tuple[int, ...]


def check_table(players: int, cards: int) -> None:
    if not MIN_PLAYERS <= players <= MAX_PLAYERS:
        raise ValueError(f"players={players}: Blob is played by {MIN_PLAYERS} to {MAX_PLAYERS} players")
    if cards < 1 or cards * players > N_CARDS:
        raise ValueError(
            f"cards={cards} with {players} players: each seat gets 1 to {N_CARDS // players} cards "
            f"(cards * players may not exceed {N_CARDS})"
        )


def forbidden_bid(players: int, cards: int, seat: int, dealer: int, bid_total: int) -> int:
    """The dealer's hooked bid, or -1 when ``seat`` is not the dealer or no bid is hooked."""
    if seat != dealer:
        return -1
    b = cards - bid_total
    return b if 0 <= b <= cards else -1


def legal_actions_of(
    *, phase: str, seat: int, players: int, cards: int, dealer: int, hand: int, bid_total: int, led: int
) -> list[int]:
    """Legal action ids, ascending. ``hand`` is a mask; ``led`` the led suit or -1."""
    if phase == "bid":
        hooked = forbidden_bid(players, cards, seat, dealer, bid_total)
        return [BID0 + b for b in range(cards + 1) if b != hooked]
    if phase == "play":
        if led >= 0 and hand & SUIT_MASKS[led]:
            hand &= SUIT_MASKS[led]
        return cards_of(hand)
    return []


@dataclass(frozen=True, slots=True)
class View:
    """What one seat knows (RULES.md, 'What a seat knows'), and nothing else.

    ``voids[s]`` is the set of suits seat ``s`` is known to lack. ``context`` is None for a
    single round; in a game it carries the totals, the round index and the schedule.
    """

    seat: int
    players: int
    cards: int
    trump: int | None
    dealer: int
    phase: str
    to_play: int | None
    hand: tuple[int, ...]
    bids: tuple[int | None, ...]
    tricks_won: tuple[int, ...]
    trick_winners: tuple[int, ...]
    trick: tuple[tuple[int, int], ...]
    played: tuple[tuple[int, int], ...]
    voids: tuple[frozenset[int], ...]
    context: GameContext | None = None

    @property
    def totals(self) -> tuple[int, ...] | None:
        return None if self.context is None else self.context.totals

    @property
    def round_index(self) -> int | None:
        return None if self.context is None else self.context.round_index

    @property
    def schedule(self) -> tuple[int, ...] | None:
        return None if self.context is None else self.context.schedule

    def legal_actions(self) -> list[int]:
        """The acting seat's legal actions; [] when it is not this seat's turn."""
        if self.to_play != self.seat:
            return []
        return legal_actions_of(
            phase=self.phase,
            seat=self.seat,
            players=self.players,
            cards=self.cards,
            dealer=self.dealer,
            hand=mask_of(self.hand),
            bid_total=sum(b for b in self.bids if b is not None),
            led=self.trick[0][1] // 13 if self.trick else -1,
        )

    def legal_or_raise(self) -> list[int]:
        """``legal_actions()`` for a player asked to move; ValueError when this seat has no move."""
        legal = self.legal_actions()
        if not legal:
            raise ValueError(f"seat {self.seat} has no legal action: to_play={self.to_play}, phase={self.phase!r}")
        return legal


class Round:
    """One round of Blob: deal, bids, tricks, scores.

    Public state (INTERFACES.md): ``to_play``, ``phase``, ``hands``, ``bids``, ``tricks_won``,
    ``trick_winners``, ``trick`` and ``played`` as (seat, card) pairs, ``voids`` as suit bitmasks.
    The search drives it through ``clone``, ``legal`` and ``apply``, which skip the checks.
    """

    __slots__ = (
        "players", "cards", "trump", "dealer", "context",
        "masks", "bids", "tricks_won", "trick_winners", "trick", "played", "void_masks",
        "to_play", "n_bids", "bid_total", "win_seat", "win_card",
    )  # fmt: skip

    players: int
    cards: int
    trump: int | None
    dealer: int
    context: GameContext | None
    masks: list[int]  # every seat's hand as a 52-bit mask
    bids: list[int | None]
    tricks_won: list[int]
    trick_winners: list[int]
    trick: list[tuple[int, int]]  # the current trick in order
    played: list[tuple[int, int]]  # every card played this round, in order
    void_masks: list[int]  # per seat, bit s set when the seat is known to lack suit s
    to_play: int | None
    n_bids: int
    bid_total: int
    win_seat: int  # who holds the current trick so far (-1 before its first card)
    win_card: int

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def deal(
        cls,
        *,
        players: int,
        cards: int,
        trump: int | None,
        dealer: int,
        hands: list[list[int]] | None = None,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        context: GameContext | None = None,
    ) -> Round:
        """A fresh round. Give ``hands`` for a set deal, or ``seed``/``rng`` for a random one."""
        check_table(players, cards)
        if trump is not None and trump not in (0, 1, 2, 3):
            raise ValueError(f"trump={trump!r}: give a suit 0..3 (S, H, C, D) or None for no trump")
        if not 0 <= dealer < players:
            raise ValueError(f"dealer={dealer}: give a seat 0..{players - 1}")
        if hands is None:
            gen = rng if rng is not None else np.random.default_rng(seed)
            deck = gen.permutation(N_CARDS)[: players * cards].tolist()
            masks = [mask_of(deck[i * cards : (i + 1) * cards]) for i in range(players)]
        else:
            masks = cls._check_hands(hands, players, cards)
        r = cls.__new__(cls)
        r.players, r.cards, r.trump, r.dealer, r.context = players, cards, trump, dealer, context
        r.masks = masks
        r.bids = [None] * players
        r.tricks_won = [0] * players
        r.trick_winners, r.trick, r.played = [], [], []
        r.void_masks = [0] * players
        r.to_play = (dealer + 1) % players
        r.n_bids = r.bid_total = 0
        r.win_seat = r.win_card = -1
        return r

    @staticmethod
    def _check_hands(hands: list[list[int]], players: int, cards: int) -> list[int]:
        if len(hands) != players:
            raise ValueError(f"{len(hands)} hands given for {players} players")
        seen: dict[int, int] = {}
        masks = []
        for seat, hand in enumerate(hands):
            if len(hand) != cards:
                raise ValueError(f"seat {seat} holds {len(hand)} cards; every seat must hold {cards}")
            ids = []
            for c in hand:
                try:
                    c = operator.index(c)  # Python int from here on: numpy ints have no bit_length
                except TypeError:
                    raise ValueError(f"seat {seat} holds {c!r}, not an integer card id 0..51") from None
                if not 0 <= c < N_CARDS:
                    raise ValueError(f"seat {seat} holds card id {c}, outside 0..51")
                if c in seen:
                    raise ValueError(f"card {card_str(c)} ({c}) is dealt twice: to seats {seen[c]} and {seat}")
                seen[c] = seat
                ids.append(c)
            masks.append(mask_of(ids))
        return masks

    def clone(self) -> Round:
        r = Round.__new__(Round)
        r.players, r.cards, r.trump, r.dealer, r.context = (
            self.players,
            self.cards,
            self.trump,
            self.dealer,
            self.context,
        )
        r.masks = self.masks[:]
        r.bids = self.bids[:]
        r.tricks_won = self.tricks_won[:]
        r.trick_winners = self.trick_winners[:]
        r.trick = self.trick[:]
        r.played = self.played[:]
        r.void_masks = self.void_masks[:]
        r.to_play, r.n_bids, r.bid_total = self.to_play, self.n_bids, self.bid_total
        r.win_seat, r.win_card = self.win_seat, self.win_card
        return r

    # -- state ----------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        if self.to_play is None:
            return "over"
        return "bid" if self.n_bids < self.players else "play"

    @property
    def hands(self) -> list[list[int]]:
        return [cards_of(m) for m in self.masks]

    @property
    def voids(self) -> list[frozenset[int]]:
        return [frozenset(s for s in range(4) if v >> s & 1) for v in self.void_masks]

    @property
    def is_over(self) -> bool:
        return self.to_play is None

    def scores(self) -> list[int]:
        """Round scores: ``10 + bid`` for an exact bid, else 0. ValueError before the end."""
        if self.to_play is not None:
            raise ValueError(f"the round is not over: seat {self.to_play} is to {self.phase}")
        return [10 + b if t == b else 0 for b, t in zip(self.bids, self.tricks_won)]  # type: ignore[operator]

    # -- the fast path --------------------------------------------------------------------
    def legal(self) -> list[int]:
        """Legal action ids of the seat to play, ascending; [] once over. Unchecked path."""
        s = self.to_play
        if s is None:
            return []
        if self.n_bids < self.players:
            cards = self.cards
            if s == self.dealer:
                hooked = cards - self.bid_total
                return [BID0 + b for b in range(cards + 1) if b != hooked]
            return list(range(BID0, BID0 + cards + 1))
        hand = self.masks[s]
        if self.trick:
            follow = hand & SUIT_MASKS[self.trick[0][1] // 13]
            if follow:
                hand = follow
        out = []
        while hand:
            low = hand & -hand
            out.append(low.bit_length() - 1)
            hand ^= low
        return out

    def apply(self, action: int) -> None:
        """Play ``action`` for the seat to play without checking it (the search's path)."""
        s: int = self.to_play  # type: ignore[assignment]
        n = self.players
        if self.n_bids < n:
            b = action - BID0
            self.bids[s] = b
            self.bid_total += b
            self.n_bids += 1
            self.to_play = (s + 1) % n  # after the dealer's bid this is dealer + 1, the first leader
            return
        self.masks[s] ^= 1 << action
        trick = self.trick
        suit = action // 13
        if trick:
            led = trick[0][1] // 13
            if suit != led:
                self.void_masks[s] |= 1 << led
            if beats(action, self.win_card, self.trump):
                self.win_seat, self.win_card = s, action
        else:
            self.win_seat, self.win_card = s, action
        trick.append((s, action))
        self.played.append((s, action))
        if len(trick) < n:
            self.to_play = (s + 1) % n
            return
        w = self.win_seat
        self.tricks_won[w] += 1
        self.trick_winners.append(w)
        self.trick = []
        self.win_seat = self.win_card = -1
        self.to_play = w if self.masks[w] else None

    # -- the checked path -----------------------------------------------------------------
    def legal_actions(self) -> list[int]:
        return self.legal()

    def play(self, action: int) -> None:
        """Play ``action`` for the seat to play; IllegalMove (nothing changed) if not allowed."""
        try:
            a = operator.index(action)
        except TypeError:
            raise IllegalMove(f"action {action!r} is not an integer id 0..{N_ACTIONS - 1}") from None
        if isinstance(action, bool) or not 0 <= a < N_ACTIONS:
            raise IllegalMove(f"action {action!r} is outside 0..{N_ACTIONS - 1}")
        if self.to_play is None:
            raise IllegalMove(f"the round is over; no action is legal (got {action_str(a)})")
        legal = self.legal()
        if a not in set(legal):
            raise IllegalMove(f"seat {self.to_play} may not {self._why_not(a)}; legal: {self._legal_str(legal)}")
        self.apply(a)

    def _why_not(self, a: int) -> str:
        s = self.to_play
        if self.phase == "bid":
            if a < BID0:
                return f"play {card_str(a)} during bidding"
            b = a - BID0
            if b > self.cards:
                return f"bid {b} with {self.cards} cards dealt"
            return f"bid {b}: the dealer may not make the bids total {self.cards} (the hook)"
        if a >= BID0:
            return f"bid {a - BID0} after bidding has ended"
        if not self.masks[s] >> a & 1:  # type: ignore[index]
            return f"play {card_str(a)}, which is not in its hand"
        return f"play {card_str(a)}: it must follow {'SHCD'[self.trick[0][1] // 13]}"

    @staticmethod
    def _legal_str(legal: list[int]) -> str:
        return " ".join(f"{action_str(a)} ({a})" for a in legal)

    def view(self, seat: int) -> View:
        """What ``seat`` knows now: its own hand and everything public, no other hidden card."""
        if not 0 <= seat < self.players:
            raise ValueError(f"seat {seat} is outside 0..{self.players - 1}")
        return View(
            seat=seat,
            players=self.players,
            cards=self.cards,
            trump=self.trump,
            dealer=self.dealer,
            phase=self.phase,
            to_play=self.to_play,
            hand=tuple(cards_of(self.masks[seat])),
            bids=tuple(self.bids),
            tricks_won=tuple(self.tricks_won),
            trick_winners=tuple(self.trick_winners),
            trick=tuple(self.trick),
            played=tuple(self.played),
            voids=tuple(self.voids),
            context=self.context,
        )

    @classmethod
    def from_view(cls, view: View, masks: list[int]) -> Round:
        """The round a view describes, with every seat's hand given as a mask (determinization)."""
        r = cls.__new__(cls)
        r.players, r.cards, r.trump, r.dealer, r.context = (
            view.players,
            view.cards,
            view.trump,
            view.dealer,
            view.context,
        )
        r.masks = masks
        r.bids = list(view.bids)
        r.tricks_won = list(view.tricks_won)
        r.trick_winners = list(view.trick_winners)
        r.trick = list(view.trick)
        r.played = list(view.played)
        r.void_masks = [sum(1 << s for s in v) for v in view.voids]
        r.to_play = view.to_play
        r.n_bids = sum(b is not None for b in view.bids)
        r.bid_total = sum(b for b in view.bids if b is not None)
        r.win_seat, r.win_card = winning(view.trick, view.trump)
        return r

    def __repr__(self) -> str:
        return (
            f"Round(players={self.players}, cards={self.cards}, trump={self.trump}, dealer={self.dealer}, "
            f"phase={self.phase!r}, to_play={self.to_play}, bids={self.bids}, tricks_won={self.tricks_won})"
        )


def random_round(players: int, cards: int, rng: np.random.Generator) -> Round:
    """A round of ``players`` x ``cards`` with a random trump (no-trump included), dealer and deal,
    drawn from ``rng`` in that order."""
    trump = TRUMP_CYCLE[int(rng.integers(len(TRUMP_CYCLE)))]
    return Round.deal(players=players, cards=cards, trump=trump, dealer=int(rng.integers(players)), rng=rng)


def choices(r: Round) -> Iterator[int]:
    """The seats that have a choice in ``r``, in turn, until the round is over: forced moves (a
    single legal action) are made here, unasked. The caller makes each yielded seat's move
    (``r.play`` or ``r.apply``) before asking for the next."""
    while r.to_play is not None:
        legal = r.legal()
        if len(legal) == 1:
            r.apply(legal[0])
        else:
            yield r.to_play


def standard_schedule(players: int, start_cards: int | None = None) -> list[int]:
    """``k, k-1, ..., 2``, then ``players`` rounds of 1, then ``2, ..., k`` (RULES.md)."""
    k = min(7, N_CARDS // players) if start_cards is None else start_cards
    check_table(players, k)
    return list(range(k, 1, -1)) + [1] * players + list(range(2, k + 1))


class Game:
    """A whole game on the standard schedule: dealer and trump rotate, scores add up."""

    def __init__(self, *, players: int, schedule: list[int], rng: np.random.Generator) -> None:
        self.players = players
        self.schedule = tuple(schedule)
        self.rng = rng
        self.totals = [0] * players
        self.round_index = 0
        self.history: list[Round] = []  # the finished rounds, in order
        self.round = self._deal(0)

    @classmethod
    def new(cls, *, players: int, start_cards: int | None = None, seed: int | None = None) -> Game:
        return cls(players=players, schedule=standard_schedule(players, start_cards), rng=np.random.default_rng(seed))

    def _deal(self, r: int) -> Round:
        ctx = GameContext(totals=tuple(self.totals), round_index=r, schedule=self.schedule)
        return Round.deal(
            players=self.players,
            cards=self.schedule[r],
            trump=TRUMP_CYCLE[r % 5],
            dealer=r % self.players,
            rng=self.rng,
            context=ctx,
        )

    @property
    def is_over(self) -> bool:
        return self.round_index >= len(self.schedule)

    @property
    def to_play(self) -> int | None:
        return None if self.is_over else self.round.to_play

    def legal_actions(self) -> list[int]:
        return [] if self.is_over else self.round.legal()

    def play(self, action: int) -> None:
        if self.is_over:
            raise IllegalMove("the game is over; no action is legal")
        self.round.play(action)
        self.advance()

    def apply(self, action: int) -> None:
        """Unchecked, like ``Round.apply``."""
        self.round.apply(action)
        self.advance()

    def advance(self) -> None:
        """Score the current round and deal the next once it is over; nothing before that."""
        if self.round.to_play is not None:
            return
        for s, pts in enumerate(self.round.scores()):
            self.totals[s] += pts
        self.history.append(self.round)
        self.round_index += 1
        if not self.is_over:
            self.round = self._deal(self.round_index)

    def view(self, seat: int) -> View:
        """The current round's view with the game context (totals, round index, schedule)."""
        return self.round.view(seat)

    def winners(self) -> list[int]:
        """Seats with the highest total (ties shared); ValueError before the end."""
        if not self.is_over:
            raise ValueError(f"the game is not over: round {self.round_index} of {len(self.schedule)}")
        best = max(self.totals)
        return [s for s, t in enumerate(self.totals) if t == best]
