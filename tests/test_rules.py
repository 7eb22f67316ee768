"""The rules engine against RULES.md: a single round, bad input, recorded rounds, invariants.

Cards and action ids are in test_cards.py; game-level rules (schedule, trump and dealer rotation,
totals) in test_game.py.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobnet.cards import BID0, N_ACTIONS, action_str, mask_of, parse_card
from blobnet.rules import IllegalMove, Round, View

FIXTURES = Path(__file__).parent / "fixtures"
SUIT = {"S": 0, "H": 1, "C": 2, "D": 3}


def cards(text: str) -> list[int]:
    return [parse_card(t) for t in text.split()]


def bid(b: int) -> int:
    return BID0 + b


def action(text: str) -> int:
    """``"bid 2"`` -> 54, ``"AS"`` -> 12."""
    return BID0 + int(text[4:]) if text.startswith("bid ") else parse_card(text)


def state(r: Round) -> tuple[Any, ...]:
    """Everything a Round holds, deep-copied, for before/after comparisons."""
    return tuple(copy.deepcopy(getattr(r, name)) for name in Round.__slots__)


def play_all(r: Round, actions: list[int]) -> Round:
    for a in actions:
        r.play(a)
    return r


def winner_of(trick: list[tuple[int, int]], trump: int | None) -> int:
    """An independent reading of RULES.md: the highest trump if any, else the highest led-suit card."""
    trumps = [(c, s) for s, c in trick if c // 13 == trump]
    if trumps:
        return max(trumps)[1]
    led = trick[0][1] // 13
    return max((c, s) for s, c in trick if c // 13 == led)[1]


# A 4-player 3-card deal used by many tests; dealer 3, so seat 0 bids and leads first.
HANDS4 = [cards("AS 2H 5C"), cards("KS QS 3D"), cards("4S AC KH"), cards("7D 9C AH")]


def round4(trump: int | None = 1, dealer: int = 3) -> Round:
    return Round.deal(players=4, cards=3, trump=trump, dealer=dealer, hands=copy.deepcopy(HANDS4))


# -- the table: players, cards, hands -------------------------------------------------------------


@pytest.mark.parametrize("players", [0, 1, 2, 9, 12])
def test_players_outside_3_to_8_rejected(players: int) -> None:
    with pytest.raises(ValueError, match="3 to 8 players"):
        Round.deal(players=players, cards=1, trump=None, dealer=0, seed=0)


@pytest.mark.parametrize(("players", "n_cards"), [(3, 18), (4, 14), (5, 11), (6, 9), (7, 8), (8, 7)])
def test_cards_times_players_over_52_rejected(players: int, n_cards: int) -> None:
    with pytest.raises(ValueError, match="may not exceed 52"):
        Round.deal(players=players, cards=n_cards, trump=None, dealer=0, seed=0)


@pytest.mark.parametrize(("players", "n_cards"), [(3, 17), (4, 13), (5, 10), (6, 8), (7, 7), (8, 6), (8, 1)])
def test_largest_deal_for_each_table_accepted(players: int, n_cards: int) -> None:
    r = Round.deal(players=players, cards=n_cards, trump=None, dealer=0, seed=1)
    assert [len(h) for h in r.hands] == [n_cards] * players


def test_zero_cards_rejected() -> None:
    with pytest.raises(ValueError, match="cards=0"):
        Round.deal(players=4, cards=0, trump=None, dealer=0, seed=0)


@pytest.mark.parametrize("trump", [4, -1, "S"])
def test_trump_outside_suits_rejected(trump: Any) -> None:
    with pytest.raises(ValueError, match="trump"):
        Round.deal(players=4, cards=3, trump=trump, dealer=0, seed=0)


@pytest.mark.parametrize("dealer", [-1, 4])
def test_dealer_outside_seats_rejected(dealer: int) -> None:
    with pytest.raises(ValueError, match="dealer"):
        Round.deal(players=4, cards=3, trump=None, dealer=dealer, seed=0)


def test_wrong_number_of_hands_rejected() -> None:
    with pytest.raises(ValueError, match="3 hands given for 4 players"):
        Round.deal(players=4, cards=3, trump=None, dealer=0, hands=HANDS4[:3])


def test_wrong_hand_size_rejected() -> None:
    hands = copy.deepcopy(HANDS4)
    hands[2] = hands[2][:2]
    with pytest.raises(ValueError, match="seat 2 holds 2 cards; every seat must hold 3"):
        Round.deal(players=4, cards=3, trump=None, dealer=0, hands=hands)


def test_duplicate_card_rejected() -> None:
    hands = copy.deepcopy(HANDS4)
    hands[3][0] = parse_card("AS")  # also in seat 0's hand
    with pytest.raises(ValueError, match="AS .* dealt twice: to seats 0 and 3"):
        Round.deal(players=4, cards=3, trump=None, dealer=0, hands=hands)


def test_duplicate_card_within_one_hand_rejected() -> None:
    hands = copy.deepcopy(HANDS4)
    hands[1] = cards("KS KS 3D")
    with pytest.raises(ValueError, match="dealt twice"):
        Round.deal(players=4, cards=3, trump=None, dealer=0, hands=hands)


@pytest.mark.parametrize("bad", [52, -1, 69])
def test_dealt_card_id_outside_0_51_rejected(bad: int) -> None:
    hands = copy.deepcopy(HANDS4)
    hands[0][0] = bad
    with pytest.raises(ValueError, match=f"card id {bad}, outside 0..51"):
        Round.deal(players=4, cards=3, trump=None, dealer=0, hands=hands)


@pytest.mark.parametrize("bad", ["AS", 1.0, None])
def test_dealt_card_that_is_not_an_int_rejected(bad: Any) -> None:
    hands: list[list[Any]] = copy.deepcopy(HANDS4)
    hands[0][0] = bad
    with pytest.raises(ValueError, match="not an integer card id"):
        Round.deal(players=4, cards=3, trump=None, dealer=0, hands=hands)


def test_hands_may_be_numpy_ints() -> None:
    r = Round.deal(players=4, cards=3, trump=None, dealer=0, hands=np.array(HANDS4, dtype=np.int64))  # type: ignore[arg-type]
    assert r.hands == [sorted(h) for h in HANDS4]
    assert all(type(c) is int for h in r.hands for c in h)


def test_set_deal_is_kept_and_random_deals_are_seeded() -> None:
    assert round4().hands == [sorted(h) for h in HANDS4]
    a = Round.deal(players=5, cards=10, trump=None, dealer=0, seed=42)
    b = Round.deal(players=5, cards=10, trump=None, dealer=0, seed=42)
    c = Round.deal(players=5, cards=10, trump=None, dealer=0, seed=43)
    assert a.hands == b.hands
    assert a.hands != c.hands
    flat = [x for h in a.hands for x in h]
    assert len(set(flat)) == 50 and all(0 <= x < 52 for x in flat)


# -- bidding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dealer", [0, 1, 2, 3])
def test_bidding_starts_left_of_dealer_and_ends_with_dealer(dealer: int) -> None:
    r = round4(dealer=dealer)
    order = []
    while r.phase == "bid":
        order.append(r.to_play)
        r.play(bid(3))  # never hooked: the total is already past 3 when the dealer bids
    assert order == [(dealer + 1) % 4, (dealer + 2) % 4, (dealer + 3) % 4, dealer]
    assert r.bids == [3, 3, 3, 3]


def test_bids_range_from_0_to_cards() -> None:
    r = round4()
    assert r.phase == "bid"
    assert r.legal_actions() == [bid(0), bid(1), bid(2), bid(3)]
    before = state(r)
    with pytest.raises(IllegalMove, match="bid 4 with 3 cards dealt"):
        r.play(bid(4))
    assert state(r) == before


def test_dealer_may_not_make_bids_total_cards() -> None:
    r = play_all(round4(), [bid(1), bid(0), bid(1)])  # total 2 of 3 cards: dealer (3) may not bid 1
    assert r.to_play == 3
    assert r.legal_actions() == [bid(0), bid(2), bid(3)]
    before = state(r)
    with pytest.raises(IllegalMove, match="hook"):
        r.play(bid(1))
    assert state(r) == before
    r.play(bid(2))
    assert sum(r.bids) != 3  # type: ignore[arg-type]


def test_hook_forbids_zero_when_others_bid_all_the_cards() -> None:
    r = play_all(round4(), [bid(1), bid(1), bid(1)])
    assert r.legal_actions() == [bid(1), bid(2), bid(3)]


def test_no_forbidden_bid_when_hook_value_out_of_range() -> None:
    r = play_all(round4(), [bid(3), bid(2), bid(0)])  # total 5 > 3: the hooked value would be -2
    assert r.legal_actions() == [bid(0), bid(1), bid(2), bid(3)]
    r.play(bid(0))
    assert r.phase == "play"


def test_only_the_dealer_is_hooked() -> None:
    r = play_all(round4(), [bid(2)])  # seat 1 could bid 1 to make the total 3: allowed, not the dealer
    assert r.legal_actions() == [bid(0), bid(1), bid(2), bid(3)]
    r.play(bid(1))
    assert r.bids == [2, 1, None, None]


def test_bids_are_public() -> None:
    r = play_all(round4(), [bid(1), bid(2)])
    for seat in range(4):
        assert r.view(seat).bids == (1, 2, None, None)


def test_card_during_bidding_refused() -> None:
    r = round4()
    before = state(r)
    with pytest.raises(IllegalMove, match="play AS during bidding"):
        r.play(parse_card("AS"))
    assert state(r) == before


# -- play -----------------------------------------------------------------------------------------


def after_bids(trump: int | None = 1, dealer: int = 3) -> Round:
    return play_all(round4(trump, dealer), [bid(0), bid(1), bid(2), bid(1)])


@pytest.mark.parametrize("dealer", [0, 1, 2, 3])
def test_first_trick_led_left_of_dealer(dealer: int) -> None:
    r = round4(dealer=dealer)
    while r.phase == "bid":
        r.play(bid(3))
    assert r.phase == "play"
    assert r.to_play == (dealer + 1) % 4


def test_leader_may_play_any_card() -> None:
    r = after_bids()
    assert r.legal_actions() == sorted(HANDS4[0])


def test_must_follow_led_suit() -> None:
    r = after_bids()
    r.play(parse_card("AS"))
    assert r.legal_actions() == sorted(cards("KS QS"))
    before = state(r)
    with pytest.raises(IllegalMove, match="must follow S"):
        r.play(parse_card("3D"))
    assert state(r) == before


def test_any_card_when_void_in_led_suit() -> None:
    r = play_all(after_bids(), cards("AS QS 4S"))
    assert r.legal_actions() == sorted(HANDS4[3])  # seat 3 holds no spade


def test_failure_to_follow_marks_void() -> None:
    r = play_all(after_bids(), cards("AS QS 4S"))
    assert all(v.voids == (frozenset(),) * 4 for v in map(r.view, range(4)))
    r.play(parse_card("7D"))  # seat 3 cannot follow spades
    for seat in range(4):
        assert r.view(seat).voids == (frozenset(), frozenset(), frozenset(), frozenset({SUIT["S"]}))


def test_following_suit_marks_no_void() -> None:
    r = play_all(after_bids(), cards("AS QS 4S AH"))
    assert r.view(0).voids[3] == {0}  # seat 3 ruffed: void in spades, not in hearts
    assert r.view(0).voids[:3] == (frozenset(),) * 3


def test_trick_goes_to_highest_trump() -> None:
    # hearts trump: seat 3 ruffs the ace of spades with AH
    r = play_all(after_bids(trump=1), cards("AS QS 4S AH"))
    assert r.trick_winners == [3]
    assert r.tricks_won == [0, 0, 0, 1]


def test_higher_trump_beats_lower_trump() -> None:
    hands = [cards("AS 2D"), cards("KS 5C"), cards("3S 4D"), cards("QS 6H")]
    r = Round.deal(players=4, cards=2, trump=3, dealer=3, hands=hands)
    play_all(r, [bid(0), bid(0), bid(0), bid(0)])
    play_all(r, cards("AS KS 3S QS"))  # seat 0 wins the spade trick
    play_all(r, cards("2D 5C 4D 6H"))  # diamonds trump led: 4D beats 2D
    assert r.trick_winners == [0, 2]


def test_trick_goes_to_highest_led_suit_card_when_no_trump_played() -> None:
    # clubs are trump but none is played: the highest spade wins, the off-suit AH does not
    hands = [cards("5S 2C"), cards("AH 3C"), cards("KS 4C"), cards("9S 5C")]
    r = Round.deal(players=4, cards=2, trump=2, dealer=3, hands=hands)
    play_all(r, [bid(0)] * 3 + [bid(1)])
    play_all(r, cards("5S AH KS 9S"))
    assert r.trick_winners == [2]


def test_no_trump_round_only_led_suit_wins() -> None:
    # the same cards as the trump test without trumps: AH is a mere discard and AS holds the trick
    r = play_all(after_bids(trump=None), cards("AS QS 4S AH"))
    assert r.trick_winners == [0]
    # seat 0 leads a low heart; 3D and 9C are discards, KH the only card that can beat 2H
    r = play_all(r, cards("2H 3D KH 9C"))
    assert r.trick_winners == [0, 2]


def test_winner_leads_next_trick() -> None:
    r = play_all(after_bids(trump=1), cards("AS QS 4S AH"))
    assert r.to_play == 3
    r = play_all(r, cards("9C 5C 3D AC"))
    assert r.trick_winners == [3, 2]
    assert r.to_play == 2


def test_card_not_in_hand_refused() -> None:
    r = after_bids()
    before = state(r)
    with pytest.raises(IllegalMove, match="play KS, which is not in its hand"):
        r.play(parse_card("KS"))  # seat 1's card, played by seat 0: out of turn
    assert state(r) == before


def test_bid_during_play_refused() -> None:
    r = after_bids()
    before = state(r)
    with pytest.raises(IllegalMove, match="after bidding has ended"):
        r.play(bid(1))
    assert state(r) == before


def test_round_ends_after_last_trick() -> None:
    r = play_all(after_bids(), cards("AS QS 4S AH 9C 5C 3D AC KH 7D 2H KS"))
    assert r.phase == "over"
    assert r.to_play is None
    assert r.legal_actions() == []
    assert r.hands == [[], [], [], []]
    assert sum(r.tricks_won) == 3 == len(r.trick_winners)


def test_play_after_over_refused() -> None:
    r = play_all(after_bids(), cards("AS QS 4S AH 9C 5C 3D AC KH 7D 2H KS"))
    before = state(r)
    for a in (0, parse_card("AS"), bid(0)):
        with pytest.raises(IllegalMove, match="the round is over"):
            r.play(a)
    assert state(r) == before


# -- scoring --------------------------------------------------------------------------------------


def test_exact_bid_scores_ten_plus_bid() -> None:
    r = play_all(after_bids(), cards("AS QS 4S AH 9C 5C 3D AC KH 7D 2H KS"))
    assert r.bids == [0, 1, 2, 1]
    assert r.tricks_won == [0, 0, 2, 1]
    assert r.scores() == [10, 0, 12, 11]


def test_missed_bid_scores_zero_over_or_under() -> None:
    r = play_all(round4(), [bid(1), bid(1), bid(0), bid(0)])
    play_all(r, cards("AS QS 4S AH 9C 5C 3D AC KH 7D 2H KS"))
    assert r.tricks_won == [0, 0, 2, 1]
    assert r.scores() == [0, 0, 0, 0]  # seat 0 and 1 under, 2 and 3 over


def test_scores_before_end_raise() -> None:
    r = after_bids()
    with pytest.raises(ValueError, match="not over"):
        r.scores()


# -- bad actions and refused moves ----------------------------------------------------------------


BAD_ACTIONS: list[Any] = [-1, 70, 1000, 2**70, 1.0, 52.5, "AS", "52", None, True, False, [0], object()]


def positions() -> list[Round]:
    """A round at each kind of moment: first bid, hooked dealer, lead, mid-trick, over."""
    out = [round4(), play_all(round4(), [bid(1), bid(0), bid(1)]), after_bids()]
    out.append(play_all(after_bids(), cards("AS QS")))
    out.append(play_all(after_bids(), cards("AS QS 4S AH 9C 5C 3D AC KH 7D 2H KS")))
    return out


@pytest.mark.parametrize("a", BAD_ACTIONS, ids=repr)
def test_non_action_refused_with_message_and_nothing_changes(a: Any) -> None:
    for r in positions():
        before = state(r)
        with pytest.raises(IllegalMove, match=r"0\.\.69"):
            r.play(a)
        assert state(r) == before


def test_every_illegal_id_refused_and_nothing_changes() -> None:
    for r in positions():
        legal = set(r.legal_actions())
        for a in range(N_ACTIONS):
            if a in legal:
                continue
            before = state(r)
            with pytest.raises(IllegalMove) as err:
                r.play(a)
            assert state(r) == before
            msg = str(err.value)
            assert action_str(a) in msg or "over" in msg
            if legal:
                assert "legal:" in msg  # the message lists what would be legal


def test_illegal_move_is_a_value_error() -> None:
    assert issubclass(IllegalMove, ValueError)


def test_numpy_int_action_accepted() -> None:
    r = round4()
    r.play(np.int64(bid(2)))  # type: ignore[arg-type]
    assert r.bids[0] == 2
    assert type(r.bids[0]) is int


# -- recorded rounds ------------------------------------------------------------------------------


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("round_*.json"))


def test_fixtures_cover_trump_no_trump_and_hook() -> None:
    data = [json.loads(p.read_text()) for p in fixture_files()]
    assert any(d["trump"] is None for d in data)
    assert any(d["trump"] is not None for d in data)
    hooked = False
    for d in data:
        for chk in d.get("checks", []):
            if chk.get("refused", "").startswith("bid") and chk["at"] == d["players"] - 1:
                hooked = True  # the dealer's bid refused
    assert hooked


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_recorded_round_replays(path: Path) -> None:
    d = json.loads(path.read_text())
    trump = None if d["trump"] is None else SUIT[d["trump"]]
    hands = [[parse_card(c) for c in h] for h in d["hands"]]
    r = Round.deal(players=d["players"], cards=d["cards"], trump=trump, dealer=d["dealer"], hands=hands)
    checks = {c["at"]: c for c in d["checks"]}
    actions = [action(a) for a in d["actions"]]
    assert len(actions) == d["players"] * (d["cards"] + 1)
    for i in range(len(actions) + 1):
        chk = checks.get(i)
        if chk is not None:
            if "legal" in chk:
                assert r.legal_actions() == sorted(action(a) for a in chk["legal"]), f"legal at step {i}"
            if "refused" in chk:
                before = state(r)
                with pytest.raises(IllegalMove):
                    r.play(action(chk["refused"]))
                assert state(r) == before
        if i < len(actions):
            r.play(actions[i])
    assert r.phase == "over"
    assert r.tricks_won == d["tricks_won"]
    assert r.trick_winners == d["trick_winners"]
    assert r.scores() == d["scores"]
    assert r.voids == [frozenset(SUIT[s] for s in v) for v in d["voids"]]
    # the referee's reading agrees with an independent one, trick by trick
    n = d["players"]
    assert [c for _, c in r.played] == actions[n:]
    for t, w in enumerate(d["trick_winners"]):
        assert winner_of(r.played[t * n : (t + 1) * n], trump) == w


# -- properties over random rounds ----------------------------------------------------------------


@st.composite
def tables(draw: st.DrawFn) -> tuple[int, int, int | None, int, int]:
    players = draw(st.integers(3, 8))
    n_cards = draw(st.integers(1, 52 // players))
    trump = draw(st.sampled_from([None, 0, 1, 2, 3]))
    dealer = draw(st.integers(0, players - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    return players, n_cards, trump, dealer, seed


def check_view(r: Round, seat: int) -> None:
    v = r.view(seat)
    hidden = {c for s, h in enumerate(r.hands) if s != seat for c in h}
    assert list(v.hand) == r.hands[seat]
    shown = set(v.hand) | {c for _, c in v.played} | {c for _, c in v.trick}
    assert not shown & hidden, "a view shows another seat's hidden card"
    assert v.played == tuple(r.played) and v.trick == tuple(r.trick)
    assert v.bids == tuple(r.bids) and v.tricks_won == tuple(r.tricks_won)
    assert v.trick_winners == tuple(r.trick_winners)
    assert v.to_play == r.to_play and v.phase == r.phase
    if r.to_play == seat:
        assert v.legal_actions() == r.legal_actions()
    else:
        assert v.legal_actions() == []


VIEW_FIELDS = {
    "seat", "players", "cards", "trump", "dealer", "phase", "to_play", "hand", "bids", "tricks_won",
    "trick_winners", "trick", "played", "voids", "context",
}  # fmt: skip


def test_view_has_no_field_for_other_hands() -> None:
    assert set(View.__dataclass_fields__) == VIEW_FIELDS


@settings(max_examples=120, deadline=None)
@given(tables())
def test_random_rounds_keep_every_invariant(table: tuple[int, int, int | None, int, int]) -> None:
    players, n_cards, trump, dealer, seed = table
    r = Round.deal(players=players, cards=n_cards, trump=trump, dealer=dealer, seed=seed)
    fast = r.clone()  # follows the same actions through the unchecked path
    pick = random.Random(seed)
    dealt = mask_of(c for h in r.hands for c in h)
    assert bin(dealt).count("1") == players * n_cards
    voids: list[set[int]] = [set() for _ in range(players)]
    bids_seen = 0
    while r.phase != "over":
        seat = r.to_play
        assert seat is not None
        legal = r.legal_actions()
        assert legal, "the hook always leaves a legal bid; a hand always has a card"
        assert legal == sorted(set(legal)) and all(type(a) is int for a in legal)
        assert legal == fast.legal()
        if r.phase == "bid":
            assert seat == (dealer + 1 + bids_seen) % players
            expected = list(range(n_cards + 1))
            if seat == dealer:
                total = sum(b for b in r.bids if b is not None)
                if 0 <= n_cards - total <= n_cards:
                    expected.remove(n_cards - total)
            assert legal == [bid(b) for b in expected]
            bids_seen += 1
        else:
            hand = r.hands[seat]
            if r.trick:
                led = r.trick[0][1] // 13
                follow = [c for c in hand if c // 13 == led]
                assert legal == (follow or hand)
            else:
                assert legal == hand
                expected_leader = (dealer + 1) % players if not r.trick_winners else r.trick_winners[-1]
                assert seat == expected_leader
        for s in range(players):
            check_view(r, s)
        a = pick.choice(legal)
        if r.phase == "play" and r.trick and a // 13 != r.trick[0][1] // 13:
            voids[seat].add(r.trick[0][1] // 13)
        r.play(a)
        fast.apply(a)
        # every dealt card is in exactly one place: a hand or the played list
        hands = [mask_of(h) for h in r.hands]
        played = mask_of(c for _, c in r.played)
        assert sum(bin(m).count("1") for m in hands) + len(r.played) == players * n_cards
        assert len({c for _, c in r.played}) == len(r.played)
        union = played
        for m in hands:
            assert not union & m
            union |= m
        assert union == dealt
        assert r.voids == [frozenset(v) for v in voids]
        assert sum(r.tricks_won) == len(r.trick_winners) == len(r.played) // players
        assert len(r.trick) == len(r.played) % players
        assert state(fast) == state(r)
    for s in range(players):
        check_view(r, s)
    assert sum(r.tricks_won) == n_cards
    assert all(len(h) == 0 for h in r.hands)
    seats = [s for s, _ in r.played]
    for t, w in enumerate(r.trick_winners):
        trick = r.played[t * players : (t + 1) * players]
        assert winner_of(trick, trump) == w
        if t + 1 < n_cards:
            assert seats[(t + 1) * players] == w  # the winner leads the next trick
    assert sum(r.bids) != n_cards  # type: ignore[arg-type]  # the hook
    assert r.scores() == [10 + b if b == t else 0 for b, t in zip(r.bids, r.tricks_won, strict=True)]  # type: ignore[operator]
