"""Choosing where a participant's media runs (``veche.cluster.placement.choose``) and what a
process's load is (``veche.cluster.load``), without sockets."""

from __future__ import annotations

from pathlib import Path

from veche.cluster.load import LoadMeter, cpu_capacity
from veche.cluster.membership import NodeInfo
from veche.cluster.placement import DEFAULT_COST, choose, estimate


def node(
    name: str, cpu: float = 0.0, media: int = 0, host: str = "h", *, draining: bool = False
) -> NodeInfo:
    return NodeInfo(name, 0, draining, cpu=cpu, media=media, host=host)


def nodes(*found: NodeInfo) -> dict[str, NodeInfo]:
    return {n.id: n for n in found}


def test_choose_keeps_a_room_on_its_process_while_under_the_threshold() -> None:
    """A process carrying the room's media at 0.5 takes the next participant, though another
    of the host idles: no new pipe."""
    found = nodes(node("a", cpu=0.5, media=20), node("b", cpu=0.0))
    assert choose(found, "b", {"a"}, {}, 0.7) == "a"


def test_choose_grows_a_room_onto_the_least_loaded_process_past_the_threshold() -> None:
    """Past the threshold the room grows onto the least-loaded process with room to spare."""
    found = nodes(node("a", cpu=0.75, media=30), node("b", cpu=0.3), node("c", cpu=0.1))
    assert choose(found, "a", {"a"}, {}, 0.7) == "c"


def test_choose_takes_the_least_loaded_of_all_when_every_process_is_busy() -> None:
    """Nobody under the threshold: the least loaded, whether it carries the room or not."""
    found = nodes(node("a", cpu=0.95, media=30), node("b", cpu=0.8, media=25))
    assert choose(found, "a", {"a"}, {}, 0.7) == "b"


def test_choose_stays_on_the_edge_s_host_while_it_has_room() -> None:
    """An idler process of another host is not chosen while one of the edge's host is under
    the threshold; a draining one of the same host never."""
    found = nodes(
        node("a", cpu=0.6, media=30),
        node("b", cpu=0.0, host="other"),
        node("c", cpu=0.0, draining=True),
    )
    assert choose(found, "a", {"a"}, {}, 0.7) == "a"


def test_choose_takes_a_node_with_room_to_spare_when_the_host_is_full() -> None:
    """Every process of the edge's host past the threshold: the least loaded node of the
    cluster still under it, one carrying the room first; with none, the edge's host."""
    found = nodes(
        node("a", cpu=0.9, media=30),
        node("b", cpu=0.5, host="other"),
        node("c", cpu=0.1, host="third"),
        node("d", cpu=0.0, host="other", draining=True),
    )
    assert choose(found, "a", {"a"}, {}, 0.7) == "c"
    assert choose(found, "a", {"a", "b"}, {}, 0.7) == "b"
    busy = nodes(node("a", cpu=0.9, media=30), node("b", cpu=0.95, host="other"))
    assert choose(busy, "a", {"a"}, {}, 0.7) == "a"


def test_choose_keeps_the_media_on_an_edge_it_has_not_heard_of() -> None:
    """An edge whose heartbeat was not read yet keeps its participant's media."""
    assert choose(nodes(node("a")), "x", {"a"}, {}, 0.7) == "x"


def test_choose_prefers_the_edge_on_a_near_tie() -> None:
    """Two processes about as loaded: the edge (no extra hop)."""
    found = nodes(node("a", cpu=0.21), node("b", cpu=0.2))
    assert choose(found, "a", set(), {}, 0.0) == "a"
    assert choose(found, "b", set(), {}, 0.0) == "b"


def test_recent_placements_count_on_top_of_the_reported_load() -> None:
    """A burst of joins spreads: placements its load does not show yet make a process look
    busier, at the default cost where too few run to measure, else at the measured one."""
    found = nodes(node("a", cpu=0.0), node("b", cpu=0.0))
    chosen = []
    recent: dict[str, int] = {}
    for _ in range(6):
        pick = choose(found, "a", set(), recent, 0.0)
        recent[pick] = recent.get(pick, 0) + 1
        chosen.append(pick)
    assert sorted(chosen) == ["a", "a", "a", "b", "b", "b"]
    assert estimate(node("a", cpu=0.0), 2) == 2 * DEFAULT_COST
    assert estimate(node("a", cpu=0.4, media=40), 5) == 0.4 + 5 * 0.01


def test_load_is_cpu_time_per_wall_second_smoothed_and_divided_by_the_capacity() -> None:
    """The first sample only starts the count (start-up work is not load); then half a core
    used under a half-core quota reads as 1.0 once smoothed in, and the load falls as the
    process idles."""
    clock, cpu = [0.0], [5.0]
    meter = LoadMeter(cpu=lambda: cpu[0], clock=lambda: clock[0], capacity=lambda: 0.5)
    assert meter.sample() == 0.0
    for _ in range(10):
        clock[0] += 2.0
        cpu[0] += 1.0  # half a core
        meter.sample()
    assert abs(meter.load - 1.0) < 0.01
    assert abs(meter.cores - 0.5) < 0.01
    clock[0] += 2.0
    meter.sample()
    assert abs(meter.load - 0.5) < 0.01


def test_cpu_capacity_reads_a_cgroup_v1_quota_and_a_v2_one(tmp_path: Path) -> None:
    """A cgroup v1 ``cpu`` quota of half a core, a v2 ``cpu.max`` of a quarter, none: 1."""
    proc = tmp_path / "cgroup"
    v1 = tmp_path / "cpu,cpuacct" / "bench"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("4:memory:/x\n2:cpu,cpuacct:/bench\n0::/\n")
    assert cpu_capacity(proc, tmp_path) == 0.5
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "cpu.max").write_text("25000 100000\n")
    proc.write_text("0::/svc\n")
    assert cpu_capacity(proc, tmp_path) == 0.25
    proc.write_text("0::/\n")
    assert cpu_capacity(proc, tmp_path) == 1.0
    assert cpu_capacity(tmp_path / "missing", tmp_path) == 1.0
