"""A viewer's bandwidth without sockets: the budget follows a falling link at once and rises
only by probing after quiet periods that grow when probes fail; the budget is shared out so
that every shown video keeps at least its lowest layer and the more important ones get more."""

from __future__ import annotations

from veche.media.allocator import SCREEN_PRIORITY, SPEAKER_PRIORITY
from veche.media.bandwidth import (
    NOMINAL_RATES,
    PROBE_HOLD,
    PROBE_HOLD_MAX,
    Demand,
    LinkBudget,
    share,
    step_up,
)
from veche.media.tracks import RATE_WINDOW, Layer

RATES = (150_000.0, 500_000.0, 1_500_000.0)


def _demand(
    key: str, wanted: int = 2, priority: float = 0, rates: tuple[float, ...] = RATES
) -> Demand:
    return Demand(key=key, rates=rates, wanted=wanted, priority=priority)


def test_share_without_a_limit_gives_every_video_the_layer_it_wants() -> None:
    """No limit known: each video gets the layer its shown size asks for."""
    assert share(None, [_demand("a", 2), _demand("b", 0)]) == {"a": 2, "b": 0}


def test_share_never_drops_a_video_below_its_lowest_layer() -> None:
    """A budget smaller than the lowest layers still sends every video its lowest layer."""
    assert share(10_000, [_demand("a"), _demand("b")]) == {"a": 0, "b": 0}


def test_share_raises_the_more_important_video_first() -> None:
    """With room for one video's top layer, the higher priority one gets it, the other stays
    low; with room for one middle layer more, the other gets that."""
    demands = [_demand("small", priority=1), _demand("large", priority=10)]
    assert share(1_700_000, demands) == {"small": 0, "large": 2}
    assert share(2_050_000, demands) == {"small": 1, "large": 2}


def test_share_takes_a_lower_layer_when_the_wanted_one_does_not_fit() -> None:
    """A video that wants the top layer but has room only for the middle one gets the middle
    one, never more than it wants."""
    assert share(700_000, [_demand("a")]) == {"a": 1}
    assert share(10_000_000, [_demand("a", wanted=1)]) == {"a": 1}


def test_share_uses_nominal_rates_for_layers_not_measured_yet() -> None:
    """A layer measured at 0 costs its nominal rate."""
    unmeasured = _demand("a", rates=(0.0, 0.0, 0.0))
    assert share(NOMINAL_RATES[1] + 1, [unmeasured]) == {"a": 1}


def test_step_up_is_the_budget_for_one_more_layer_of_the_first_video_below_its_wish() -> None:
    """From a budget that sends both videos their lowest layer, the next step raises the more
    important one by one layer; nothing is left when every video has its wish."""
    demands = [_demand("small", priority=1), _demand("large", priority=10)]
    assert step_up(300_000, demands) == 150_000 + 500_000
    assert step_up(10_000_000, demands) is None


def test_budget_has_no_limit_until_the_link_is_congested() -> None:
    """Estimates above what is sent, or falling while still above it, and small losses set
    no limit."""
    budget = LinkBudget()
    assert not budget.estimate(2_000_000, sending=1_000_000, now=0)
    assert not budget.estimate(1_500_000, sending=1_000_000, now=1)
    assert not budget.report(0.05, sending=1_000_000, now=2)
    assert budget.limit is None


def test_a_falling_estimate_below_what_is_sent_limits_the_budget_at_once() -> None:
    """The viewer's estimate falls below what it is sent: the budget is that estimate."""
    budget = LinkBudget()
    budget.estimate(2_000_000, sending=1_800_000, now=0)
    assert budget.estimate(255_000, sending=1_800_000, now=0.5)
    assert budget.limit == 255_000


def test_heavy_loss_limits_the_budget_below_what_is_sent() -> None:
    """A report losing 40 % while 1 Mbit/s is sent limits the budget to the 0.6 Mbit/s that got
    through (or the estimate, if lower)."""
    budget = LinkBudget()
    assert budget.report(0.4, sending=1_000_000, now=0)
    assert budget.limit == 600_000
    budget.estimate(300_000, sending=1_000_000, now=0.5)
    assert budget.report(0.4, sending=1_000_000, now=1)
    assert budget.limit == 300_000


def test_the_budget_is_raised_only_after_a_quiet_hold_and_lifted_once_it_covers_the_wish() -> None:
    """No raise before PROBE_HOLD quiet seconds; then one step; a further quiet hold proves it
    and the next raise (or, when the wish fits, the lift) follows."""
    budget = LinkBudget()
    budget.report(0.25, sending=400_000, now=0)
    assert budget.limit == 300_000
    assert not budget.probe(2_000_000, 700_000, now=PROBE_HOLD - 0.1)
    assert budget.probe(2_000_000, 700_000, now=PROBE_HOLD)
    assert budget.limit is not None
    assert budget.limit >= 700_000
    assert not budget.probe(2_000_000, 1_700_000, now=2 * PROBE_HOLD - 0.1)
    assert budget.probe(budget.limit, None, now=2 * PROBE_HOLD)
    assert budget.limit is None


def test_a_raise_the_link_cannot_carry_doubles_the_wait_for_the_next() -> None:
    """Congestion right after a raise sets the budget back and makes the next raise wait twice
    as long, up to PROBE_HOLD_MAX; a raise that holds makes it PROBE_HOLD again."""
    budget = LinkBudget()
    budget.report(0.5, sending=400_000, now=0)
    now = 0.0
    hold = PROBE_HOLD
    for _ in range(6):
        now += hold
        assert budget.probe(2_000_000, 700_000, now=now)
        budget.report(0.3, sending=700_000, now=now + 1)
        now += 1
        hold = min(hold * 2, PROBE_HOLD_MAX)
        assert not budget.probe(2_000_000, 700_000, now=now + hold - 0.1)
    assert hold == PROBE_HOLD_MAX
    now += hold
    assert budget.probe(2_000_000, 700_000, now=now)
    now += PROBE_HOLD_MAX
    assert budget.probe(2_000_000, 1_700_000, now=now)  # the raise held
    budget.report(0.3, sending=1_700_000, now=now + 1)
    assert not budget.probe(2_000_000, 1_700_000, now=now + 1 + 2 * PROBE_HOLD - 0.1)
    assert budget.probe(2_000_000, 1_700_000, now=now + 1 + 2 * PROBE_HOLD)


def test_a_layer_measures_the_bitrate_of_its_frames() -> None:
    """Frames of 1250 bytes 100 times a second measure 1 Mbit/s."""
    layer = Layer("h", assembler=None)  # type: ignore[arg-type]
    for tick in range(int(3 / 0.01)):
        layer.count(1250, tick * 0.01)
    assert abs(layer.bitrate - 1_000_000) < 50_000
    assert RATE_WINDOW < 3


def test_share_serves_a_shared_screen_then_the_speaker_then_bigger_tiles() -> None:
    """The priorities the subscribe leg gives: a screen's claim beats the speaker's camera,
    whose claim beats a bigger tile's."""
    big_tile = 1280 * 720
    demands = [
        _demand("big", priority=big_tile),
        _demand("speaker", priority=320 * 180 + SPEAKER_PRIORITY),
        _demand("screen", priority=320 * 180 + SCREEN_PRIORITY),
    ]
    # Room for one top layer and one middle layer beyond the three lowest.
    budget = 3 * RATES[0] + (RATES[2] - RATES[0]) + (RATES[1] - RATES[0])
    assert share(budget, demands) == {"screen": 2, "speaker": 1, "big": 0}
