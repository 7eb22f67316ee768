"""Cards and action ids (RULES.md), and who takes a trick."""

from __future__ import annotations

import pytest

from blobnet.cards import MAX_BID, N_ACTIONS, action_str, beats, card_str, parse_card, winning


def cards(text: str) -> list[int]:
    return [parse_card(t) for t in text.split()]


# -- cards and action ids -----------------------------------------------------------------------


def test_card_id_is_suit_times_13_plus_rank() -> None:
    assert parse_card("2S") == 0
    assert parse_card("AS") == 12
    assert parse_card("2H") == 13
    assert parse_card("AD") == 51
    assert parse_card("TC") == 2 * 13 + 8
    assert [card_str(c) for c in (0, 12, 13, 51)] == ["2S", "AS", "2H", "AD"]


def test_card_text_round_trips_for_every_card() -> None:
    for c in range(52):
        assert parse_card(card_str(c)) == c
    assert {card_str(c) for c in range(52)} == {r + s for r in "23456789TJQKA" for s in "SHCD"}


def test_parse_card_accepts_10_and_lower_case() -> None:
    assert parse_card("10D") == parse_card("TD") == 3 * 13 + 8
    assert parse_card("10d") == parse_card("td") == parse_card(" TD ")
    assert parse_card("as") == 12


@pytest.mark.parametrize("text", ["", "A", "1S", "AX", "ASS", "10", "11D", "0S", "S2"])
def test_parse_card_rejects_what_is_not_a_card(text: str) -> None:
    with pytest.raises(ValueError, match="not a card"):
        parse_card(text)


@pytest.mark.parametrize("card", [-1, 52, 69])
def test_card_str_rejects_ids_outside_0_51(card: int) -> None:
    with pytest.raises(ValueError, match="outside 0..51"):
        card_str(card)


def test_action_ids_are_cards_then_bids_70_in_all() -> None:
    assert N_ACTIONS == 70
    assert MAX_BID == 17 == 52 // 3
    assert action_str(0) == "2S"
    assert action_str(51) == "AD"
    assert action_str(52) == "bid 0"
    assert action_str(69) == "bid 17"


@pytest.mark.parametrize(
    ("trick", "trump", "seat"),
    [
        ("KS AS 2S", None, 1),  # the highest card of the led suit
        ("KS AH 2S", None, 0),  # another suit never wins without trumps
        ("KS 2H 3H", 1, 2),  # the highest trump
        ("AH 2S KS", 0, 2),  # a trump on a led side suit
        ("", 2, -1),  # an empty trick is held by nobody
    ],
)
def test_the_trick_goes_to_the_highest_trump_else_the_highest_card_of_the_led_suit(
    trick: str, trump: int | None, seat: int
) -> None:
    plays = list(enumerate(cards(trick)))
    assert winning(plays, trump)[0] == seat
    if plays:
        best = plays[seat][1]
        assert all(not beats(c, best, trump) for s, c in plays if s != seat)
