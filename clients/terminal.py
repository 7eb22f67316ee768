"""A person plays Blob at the terminal: ``blobnet play --players 4 --cards 5 --opponent heuristic``.

The person holds seat 0 ("you"); every other seat is the opponent player (``random``,
``heuristic`` or a checkpoint, as ``clients.players.parse_player`` reads them). Before each of
the person's moves the table is shown: trump, dealer, bids, tricks won, the trick so far, the
hand sorted by suit and the legal moves. Input: a card (``AS``, ``td``, ``10D``), ``bid 2`` or
just ``2`` while bidding, ``help`` to show the table again, ``quit`` (or end of input) to stop.
A move the rules refuse is answered with the rules' reason and asked again.

Input and output are functions (``read(prompt) -> str``, raising EOFError at the end, and
``write(text)``), so the whole session can be driven by a script.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

import numpy as np

from blobnet.cards import BID0, SUITS, card_str, parse_card
from blobnet.player import Player
from blobnet.rules import TRUMP_CYCLE, Game, IllegalMove, Round, check_table, standard_schedule
from clients.players import parse_player

__all__ = ["Quit", "TerminalSession", "play_command", "format_hand", "parse_move", "describe_move"]

SUIT_NAMES = ("spades", "hearts", "clubs", "diamonds")
HUMAN = 0  # the person's seat
QUIT_WORDS = ("quit", "exit", "q")


class Quit(Exception):
    """The person asked to stop (``quit`` or end of input)."""


def seat_name(seat: int) -> str:
    return "you" if seat == HUMAN else f"P{seat}"


def trump_name(trump: int | None) -> str:
    return "none (no trump)" if trump is None else f"{SUITS[trump]} ({SUIT_NAMES[trump]})"


def describe_move(action: int) -> str:
    """``bids 2`` or ``plays AS``."""
    return f"bids {action - BID0}" if action >= BID0 else f"plays {card_str(action)}"


def format_hand(cards: list[int] | tuple[int, ...]) -> str:
    """Cards grouped by suit (S H C D), high to low inside a suit: ``AS 9S  KH  TD 2D``."""
    groups = []
    for s in range(4):
        suit = sorted((c for c in cards if c // 13 == s), reverse=True)
        if suit:
            groups.append(" ".join(card_str(c) for c in suit))
    return "  ".join(groups) if groups else "(empty)"


def parse_move(text: str, phase: str) -> int:
    """An action id from the person's text: ``AS``/``10d`` a card, ``bid 2`` or ``2`` a bid.

    ValueError saying what was expected when the text is neither."""
    text = text.strip()
    t = text.lower()
    words = t.split()
    if words and words[0] in ("bid", "b"):
        rest = "".join(words[1:])
        if not rest.isdigit():
            raise ValueError(f"{text!r}: write bid then a number, like 'bid 2'")
        return BID0 + int(rest)
    if t.isdigit():
        if phase == "bid":
            return BID0 + int(t)
        raise ValueError(f"{text!r}: bidding is over; play a card, like AS or 10D")
    if words and words[0] in ("play", "p") and len(words) == 2:
        text = text.split()[1]
    return parse_card(text)


class TerminalSession:
    """One session: ``rounds`` independent rounds (dealer and trump rotate as in a game), or a
    whole game on the standard schedule when ``rounds`` is 0. ``opponent`` plays every seat but 0.
    ``seed`` fixes the deals."""

    def __init__(
        self,
        *,
        players: int,
        cards: int,
        opponent: Player,
        rounds: int = 1,
        seed: int | None = None,
        read: Callable[[str], str] = input,
        write: Callable[[str], None] = print,
    ) -> None:
        if rounds < 0:
            raise ValueError(f"rounds={rounds}: give a number of rounds, or 0 for a full game")
        check_table(players, cards)
        self.players = players
        self.cards = cards
        self.opponent = opponent
        self.rounds = rounds
        self.rng = np.random.default_rng(seed)
        self.read = read
        self.write = write
        self.totals = [0] * players

    # -- the session -----------------------------------------------------------------------
    def run(self) -> int:
        """Play the session; 0 when it ends or the person quits."""
        try:
            if self.rounds == 0:
                g = Game(players=self.players, schedule=_schedule(self.players, self.cards), rng=self.rng)
                while not g.is_over:
                    self._play_round(g.round, g.round_index, len(g.schedule))
                    g.advance()
                self.totals = list(g.totals)
                self._show_winners()
            else:
                for i in range(self.rounds):
                    r = Round.deal(
                        players=self.players,
                        cards=self.cards,
                        trump=TRUMP_CYCLE[i % 5],
                        dealer=i % self.players,
                        rng=self.rng,
                    )
                    self._play_round(r, i, self.rounds)
                if self.rounds > 1:
                    self._show_winners()
        except Quit:
            self.write("Bye.")
        return 0

    def _play_round(self, r: Round, index: int, count: int) -> None:
        self.write("")
        self.write(
            f"=== Round {index + 1} of {count}: {r.players} players, {r.cards} card{'s' * (r.cards > 1)} each; "
            f"trump {trump_name(r.trump)}; dealer {seat_name(r.dealer)} ==="
        )
        self.write(f"Your hand: {format_hand(r.hands[HUMAN])}")
        while r.to_play is not None:
            seat = r.to_play
            tricks_before = len(r.trick_winners)
            trick = list(r.trick)
            if seat == HUMAN:
                action = self._ask(r)
                r.play(action)  # _ask only returns actions the rules accept
            else:
                action = int(self.opponent.act(r.view(seat)))
                r.play(action)  # an opponent's illegal action is a bug: let IllegalMove surface
                self.write(f"{seat_name(seat)} {describe_move(action)}")
            if len(r.trick_winners) > tricks_before:
                w = r.trick_winners[-1]
                played = " ".join(f"{seat_name(s)}:{card_str(c)}" for s, c in trick + [(seat, action)])
                self.write(f"  trick {len(r.trick_winners)}: {played} -> {seat_name(w)} win{'s' * (w != HUMAN)}")
        self._show_result(r)

    def _ask(self, r: Round) -> int:
        self._show_table(r)
        while True:
            try:
                text = self.read("bid> " if r.phase == "bid" else "play> ")
            except EOFError:
                raise Quit from None
            t = text.strip().lower()
            if t in QUIT_WORDS:
                raise Quit
            if t in ("help", "?", "h", ""):
                self._show_table(r)
                continue
            try:
                action = parse_move(text, r.phase)
                probe = r.clone()
                probe.play(action)  # the rules say why a move is refused; r itself is untouched
            except IllegalMove as e:
                self.write(f"Not allowed: {_for_people(str(e))}")
                continue
            except ValueError as e:
                self.write(f"Not understood: {e}")
                continue
            return action

    # -- what is shown ---------------------------------------------------------------------
    def _show_table(self, r: Round) -> None:
        v = r.view(HUMAN)
        self.write("")
        self.write(f"Trump: {trump_name(v.trump)}   dealer: {seat_name(v.dealer)}")
        bids = "  ".join(f"{seat_name(s)} {'-' if b is None else b}" for s, b in enumerate(v.bids))
        self.write(f"Bids:   {bids}")
        if v.phase == "play":
            won = "  ".join(f"{seat_name(s)} {t}" for s, t in enumerate(v.tricks_won))
            self.write(f"Tricks: {won}")
            trick = " ".join(f"{seat_name(s)}:{card_str(c)}" for s, c in v.trick) or "(you lead)"
            self.write(f"Trick:  {trick}")
        self.write(f"Hand:   {format_hand(v.hand)}")
        legal = v.legal_actions()
        if v.phase == "bid":
            text = " ".join(str(a - BID0) for a in legal)
            hooked = [b for b in range(v.cards + 1) if BID0 + b not in legal]
            note = f" (not {hooked[0]}: as dealer you may not make the bids total {v.cards})" if hooked else ""
            self.write(f"Your bid, one of: {text}{note}")
        else:
            self.write(f"Your card, one of: {format_hand(legal)}")

    def _show_result(self, r: Round) -> None:
        scores = r.scores()
        self.write("Round over:")
        for s in range(r.players):
            self.totals[s] += scores[s]
            made = "made" if r.bids[s] == r.tricks_won[s] else "missed"
            self.write(
                f"  {seat_name(s):>3}: bid {r.bids[s]}, took {r.tricks_won[s]} ({made}) -> {scores[s]:2d} points"
            )
        self.write("Totals: " + "  ".join(f"{seat_name(s)} {t}" for s, t in enumerate(self.totals)))

    def _show_winners(self) -> None:
        best = max(self.totals)
        winners = [seat_name(s) for s, t in enumerate(self.totals) if t == best]
        self.write(f"Final totals: {'  '.join(f'{seat_name(s)} {t}' for s, t in enumerate(self.totals))}")
        self.write(f"Winner{'s' * (len(winners) > 1)}: {', '.join(winners)} with {best} points")


def _for_people(message: str) -> str:
    """The rules' message said to the person: "you" for seat 0, moves without their action ids."""
    message = re.sub(r" \(\d+\)", "", message)
    return message.replace(f"seat {HUMAN} may not", "you may not").replace("not in its hand", "not in your hand")


def _schedule(players: int, cards: int) -> list[int]:
    """The standard schedule starting at ``cards`` (``--cards`` is the first round's hand in a game)."""
    return standard_schedule(players, cards)


def play_command(
    args: argparse.Namespace,
    *,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] = print,
) -> int:
    """``blobnet play``: the person at seat 0 against ``--opponent`` in every other seat."""
    opponent = parse_player(args.opponent, seed=args.seed)
    write(
        f"Blob: you are seat 0 against {args.opponent} in seats 1..{args.players - 1}. "
        "Type a card (AS, 10D), a bid (2 or 'bid 2'), 'help' or 'quit'."
    )
    session = TerminalSession(
        players=args.players,
        cards=args.cards,
        opponent=opponent,
        rounds=args.rounds,
        seed=args.seed,
        read=read,
        write=write,
    )
    return session.run()
