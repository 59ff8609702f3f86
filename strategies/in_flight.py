"""How many samples a request keeps in flight when that should follow the engine's load.

A sample that a stop rule may make unnecessary (adaptive voting) costs tokens when it
runs beside others of its request. On a busy engine those tokens are other requests'
throughput; on an idle one the engine would do nothing else with that time, and the
extra samples buy latency. `EngineLoad` counts the samples this service has in flight as
they start and settle (samples drawn through `sample_until`, which is every strategy's
sampling; an LLM judge's scoring calls are not counted). It counts them itself, at once,
because the engine registers a sample only when the sample's task first runs: a burst of
requests would otherwise each see an idle engine. `FollowLoad` turns that count into one
request's limit.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ENGINE_FILL = 16
"""Samples in flight at which the engine counts as busy unless the server says otherwise
(`TTSCALE_ENGINE_FILL`). Below it a request that follows the load may add samples."""


@dataclass
class EngineLoad:
    """The samples one service has in flight, and how many make the engine busy. One per
    service, shared by its requests; only `sample_until` changes `running`."""

    fill: int = DEFAULT_ENGINE_FILL
    running: int = 0

    def others(self, mine: int) -> int:
        """Samples in flight that belong to other requests than one with `mine`."""
        return max(0, self.running - mine)


@dataclass(frozen=True)
class FollowLoad:
    """In-flight limit of a request that keeps `floor` samples running on a busy engine
    and takes up what the other requests leave of the engine's fill, up to `ceiling`."""

    floor: int
    ceiling: int

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got {self.floor} and {self.ceiling}")

    def limit(self, mine: int, load: EngineLoad) -> int:
        room = load.fill - load.others(mine)
        return max(self.floor, min(self.ceiling, room))


InFlight = int | FollowLoad
"""How many samples one call keeps running: a fixed number, or a rule over the load."""


def describe_in_flight(in_flight: int | FollowLoad) -> dict[str, int | bool]:
    """One shape for the evidence whether a request fixes its samples in flight or follows
    the load, so that clients read the same fields either way."""
    if isinstance(in_flight, FollowLoad):
        return {"floor": in_flight.floor, "ceiling": in_flight.ceiling, "follows_load": True}
    return {"floor": in_flight, "ceiling": in_flight, "follows_load": False}
