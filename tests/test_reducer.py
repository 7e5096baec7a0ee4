"""The reducer, row by row: what each operation does to the state, and which are no-ops."""

from __future__ import annotations

from typing import Any

import pytest

from eventlog import CONTROLLER, State, UsageError, apply, digest, fires, fold
from tests.helpers import Show, make_event

N1, N2, N3 = "node-1", "node-2", "node-3"
C1, C2 = "cue-1", "cue-2"


def without(state: State, *names: str) -> dict[str, Any]:
    """The state as a dict, minus the named parts (and always minus seq and ignored)."""
    raw = State.decode(state.encode()).to_dict()
    for name in ("seq", "ignored", *names):
        del raw[name]
    return raw


def armed_show(*nodes: str) -> Show:
    """Nodes joined, a project loaded naming them, every node armed."""
    show = Show()
    show.join(*nodes)
    assert show.load("alpha", list(nodes)) is None
    show.arm(*nodes)
    assert show.state.engine["armed"] == "yes"
    return show


def running_show() -> Show:
    show = armed_show(N1)
    assert show.go() is None
    assert show.state.engine["running"] == "yes"
    return show


def assert_recorded_noop(show: Show, before: State, reason: str | None, *changed: str) -> None:
    """`reason` says why; the state moved on by one seq and one ignored, nothing else."""
    assert reason is not None
    assert show.state.seq == before.seq + 1
    assert show.state.ignored == before.ignored + 1
    assert without(show.state, *changed) == without(before, *changed)


# ---------------------------------------------------------------- empty state and ordering


def test_empty_state() -> None:
    state = State()
    assert state.seq == 0
    assert state.engine == {
        "running": "",
        "armed": "",
        "load": "",
        "nextcue": "",
        "timecode": 0,
        "currentcue": [],
    }
    assert state.cues == state.players == state.nodes == state.status == state.commands == {}
    assert state.ignored == 0


def test_apply_sets_seq() -> None:
    state = State()
    assert apply(state, make_event(1, "status", "update", N1, "pong", {})) is None
    assert state.seq == 1


@pytest.mark.parametrize("seq", [0, 2, 5])
def test_apply_out_of_order_raises_usage_error(seq: int) -> None:
    state = State()
    with pytest.raises(UsageError):
        apply(state, make_event(seq, "status", "update", N1, "pong", {}))
    assert state == State()


def test_apply_twice_raises_usage_error() -> None:
    state = State()
    event = make_event(1, "status", "update", N1, "pong", {})
    apply(state, event)
    before = state.copy()
    with pytest.raises(UsageError):
        apply(state, event)
    assert state == before


def test_fold_is_apply_in_order() -> None:
    show = running_show()
    assert fold(show.events) == show.state
    start = fold(show.events[:3])
    assert fold(show.events[3:], start) is start
    assert start == show.state


# ---------------------------------------------------------------- players


def test_player_add() -> None:
    show = Show()
    assert show.do("player", "add", N1, "audioplayer_c1") is None
    assert show.do("player", "add", N1, "audiomixer_0", {"channels": 2}) is None
    assert show.state.players == {N1: {"audioplayer_c1": None, "audiomixer_0": {"channels": 2}}}


def test_player_update_replaces_data() -> None:
    show = Show()
    show.do("player", "add", N2, "dmxplayer_n2", {"universe": 1})
    assert show.do("player", "update", N2, "dmxplayer_n2", {"universe": 2}) is None
    assert show.state.players == {N2: {"dmxplayer_n2": {"universe": 2}}}


def test_player_remove() -> None:
    show = Show()
    show.do("player", "add", N1, "audioplayer_c1")
    show.do("player", "add", N1, "audioplayer_c2")
    assert show.do("player", "remove", N1, "audioplayer_c1") is None
    assert show.state.players == {N1: {"audioplayer_c2": None}}
    assert show.do("player", "remove", N1, "audioplayer_c2") is None
    assert show.state.players == {}
    assert show.state.ignored == 0


@pytest.mark.parametrize(
    ("node", "player"), [(N1, "audioplayer_unknown"), (N2, "audioplayer_c1")], ids=["id", "node"]
)
def test_player_remove_unknown_is_recorded_noop(node: str, player: str) -> None:
    show = Show()
    show.do("player", "add", N1, "audioplayer_c1")
    before = show.state.copy()
    reason = show.do("player", "remove", node, player)
    assert_recorded_noop(show, before, reason)
    assert reason is not None
    assert player in reason


# ---------------------------------------------------------------- cues


def test_cue_add_plays() -> None:
    show = Show()
    assert show.start_cue(N1, C1, "1500") is None
    assert show.state.cues[C1] == {"status": 1, "offset": "1500", "node": N1, "seq": 1}
    assert show.state.engine["currentcue"] == [[C1, "1500"]]


def test_cue_add_keeps_a_numeric_offset_as_text() -> None:
    show = Show()
    show.cue("add", N1, C1, {"offset": 250})
    show.cue("add", N1, C2, {"offset": 2.5})
    assert show.state.cues[C1]["offset"] == "250"
    assert show.state.engine["currentcue"] == [[C1, "250"], [C2, "2.5"]]


def test_cue_add_while_playing_is_noop() -> None:
    show = Show()
    show.start_cue(N1, C1, "0")
    show.cue("update", N1, C1, {"percentage": 40})
    before = show.state.copy()
    reason = show.start_cue(N2, C1, "999")
    assert_recorded_noop(show, before, reason)
    assert show.state.cues[C1]["status"] == 40
    assert show.state.engine["currentcue"] == [[C1, "0"]]


def test_cue_add_after_played_plays_again() -> None:
    show = Show()
    show.start_cue(N1, C1, "0")
    show.cue("remove", N1, C1)
    assert show.state.cues[C1]["status"] == 100
    assert show.start_cue(N1, C1, "10") is None
    assert show.state.cues[C1]["status"] == 1
    assert show.state.engine["currentcue"] == [[C1, "10"]]


@pytest.mark.parametrize("pct", [1, 2, 50, 99])
def test_cue_update_while_playing(pct: int) -> None:
    show = Show()
    show.start_cue(N1, C1)
    assert show.cue("update", N1, C1, {"id": C1, "percentage": pct}) is None
    assert show.state.cues[C1]["status"] == pct
    assert show.state.cues[C1]["seq"] == 2
    assert show.state.engine["currentcue"] == [[C1, "0"]]


@pytest.mark.parametrize("pct", [100, -1])
def test_cue_update_to_end_or_error_leaves_currentcue(pct: int) -> None:
    show = Show()
    show.start_cue(N1, C1, "0")
    show.start_cue(N1, C2, "5")
    assert show.cue("update", N1, C1, {"percentage": pct}) is None
    assert show.state.cues[C1]["status"] == pct
    assert show.state.engine["currentcue"] == [[C2, "5"]]


def test_cue_update_of_unknown_cue_is_noop() -> None:
    show = Show()
    before = show.state.copy()
    assert_recorded_noop(show, before, show.cue("update", N1, C1, {"percentage": 30}))
    assert C1 not in show.state.cues


@pytest.mark.parametrize("end", ["remove", "stop", "error"])
def test_cue_update_when_not_playing_is_noop(end: str) -> None:
    show = armed_show(N1)
    show.start_cue(N1, C1)
    if end == "remove":
        show.cue("remove", N1, C1)
    elif end == "stop":
        show.stop()
    else:
        show.cue("update", N1, C1, {"percentage": -1})
    before = show.state.copy()
    assert_recorded_noop(show, before, show.cue("update", N1, C1, {"percentage": 60}))


def test_cue_update_to_zero_is_noop() -> None:
    show = Show()
    show.start_cue(N1, C1)
    show.cue("update", N1, C1, {"percentage": 20})
    before = show.state.copy()
    assert_recorded_noop(show, before, show.cue("update", N1, C1, {"percentage": 0}))
    assert show.state.cues[C1]["status"] == 20


def test_cue_remove_when_playing_marks_played() -> None:
    show = Show()
    show.start_cue(N1, C1, "0")
    show.start_cue(N1, C2, "7")
    show.cue("update", N1, C1, {"percentage": 70})
    assert show.cue("remove", N1, C1, {"id": C1}) is None
    assert show.state.cues[C1]["status"] == 100
    assert show.state.cues[C1]["seq"] == 4
    assert show.state.engine["currentcue"] == [[C2, "7"]]
    assert show.cue("remove", N1, C2) is None
    assert show.state.engine["currentcue"] == []


@pytest.mark.parametrize("how", ["unknown", "played", "stopped", "reloaded"])
def test_stale_cue_remove_is_recorded_noop(how: str) -> None:
    show = armed_show(N1)
    if how != "unknown":
        show.start_cue(N1, C1)
    if how == "played":
        show.cue("remove", N1, C1)
    elif how == "stopped":
        show.stop()
    elif how == "reloaded":
        show.load("alpha", [N1])
    before = show.state.copy()
    reason = show.cue("remove", N1, C1, {"id": C1})
    assert_recorded_noop(show, before, reason)
    assert reason is not None
    assert reason.startswith("stale remove")


# ---------------------------------------------------------------- status


def test_status_nextcue() -> None:
    show = Show()
    assert show.status(N1, "nextcue", {"nextcue": C2}) is None
    assert show.state.engine["nextcue"] == C2
    assert show.status(N1, "nextcue", {"nextcue": ""}) is None
    assert show.state.engine["nextcue"] == ""
    assert show.state.status[N1]["nextcue"] == {"data": {"nextcue": ""}, "seq": 2}


def test_armed_only_when_every_named_node_armed() -> None:
    show = Show()
    show.join(N1, N2, N3)
    show.load("alpha", [N1, N2])
    assert show.state.required == [N1, N2]
    assert show.state.engine["armed"] == "no"
    show.arm(N1)
    assert show.state.engine["armed"] == "no"
    show.arm(N3)  # not required: does not help
    assert show.state.engine["armed"] == "no"
    show.arm(N2)
    assert show.state.engine["armed"] == "yes"
    assert set(show.state.armed_nodes) == {N1, N2, N3}
    assert show.state.armed_nodes[N2] == show.state.seq


def test_required_defaults_to_nodes_online_at_load() -> None:
    show = Show()
    show.join(N3, N1, N2)
    show.leave(N3)
    show.load("alpha")
    assert show.state.required == [N1, N2]
    show.join(N3)  # joined after the load: not required
    show.arm(N1)
    assert show.state.engine["armed"] == "no"
    show.arm(N2)
    assert show.state.engine["armed"] == "yes"


def test_named_nodes_are_deduplicated_and_sorted() -> None:
    show = Show()
    show.load("alpha", [N2, N1, N2])
    assert show.state.required == [N1, N2]


def test_without_required_nodes_one_armed_node_arms() -> None:
    show = Show()
    show.load("alpha")
    assert show.state.required == []
    assert show.state.engine["armed"] == "no"
    show.arm(N1)
    assert show.state.engine["armed"] == "yes"


def test_armed_ready_no_disarms() -> None:
    show = armed_show(N1, N2)
    assert show.status(N2, "armed_ready", {"armed": "no"}) is None
    assert show.state.engine["armed"] == "no"
    assert N2 not in show.state.armed_nodes
    show.arm(N2)
    assert show.state.engine["armed"] == "yes"


def test_armed_ready_counts_only_since_the_last_load() -> None:
    show = armed_show(N1, N2)
    show.load("beta", [N1, N2])
    assert show.state.engine["armed"] == "no"
    assert show.state.armed_nodes == {}
    show.arm(N1)
    assert show.state.engine["armed"] == "no"
    show.arm(N2)
    assert show.state.engine["armed"] == "yes"


def test_armed_ready_before_load() -> None:
    show = Show()
    show.join(N1)
    before = show.state.copy()
    reason = show.status(N1, "armed_ready", {"armed": "yes"})
    assert reason is not None
    assert "load" in reason
    assert show.state.ignored == before.ignored + 1
    assert show.state.engine["armed"] != "yes"
    assert show.go() is not None
    # the early report does not count for the load that follows
    show.load("alpha", [N1])
    assert show.state.engine["armed"] == "no"
    show.arm(N1)
    assert show.state.engine["armed"] == "yes"


def test_status_cue_enabled() -> None:
    show = Show()
    assert show.status(N1, "cue_enabled", {"cue_id": C1, "enabled": False}) is None
    assert show.state.cue_enabled == {C1: False}
    show.status(N1, "cue_enabled", {"cue_id": C1, "enabled": True})
    show.status(N1, "cue_enabled", {"cue_id": C2, "enabled": False})
    assert show.state.cue_enabled == {C1: True, C2: False}


def test_pong() -> None:
    show = Show()
    show.join(N1)
    assert show.status(N1, "pong", {}) is None
    assert show.state.nodes[N1] == {"online": True, "seq": 1, "pong": 2}
    # a pong from a node the controller never announced: known, but not online
    assert show.status(N2, "pong", {}) is None
    assert show.state.nodes[N2] == {"online": False, "seq": 3, "pong": 3}
    assert show.state.status[N2]["pong"] == {"data": {}, "seq": 3}


def test_timecode() -> None:
    show = Show()
    assert show.status(N1, "timecode", {"value": 125_000}) is None
    assert show.state.engine["timecode"] == 125_000
    show.status(CONTROLLER, "timecode", {"value": 126_000})
    assert show.state.engine["timecode"] == 126_000


def test_node_joined_and_left() -> None:
    show = Show()
    show.join(N1)
    assert show.state.nodes == {N1: {"online": True, "seq": 1, "pong": 0}}
    show.status(N1, "pong", {})
    show.leave(N1)
    assert show.state.nodes == {N1: {"online": False, "seq": 3, "pong": 2}}
    show.join(N1)
    assert show.state.nodes[N1]["online"] is True
    assert show.state.nodes[N1]["seq"] == 4
    assert show.state.ignored == 0


@pytest.mark.parametrize("target", ["node_joined", "node_left"])
def test_liveness_from_a_node_is_refused(target: str) -> None:
    show = Show()
    show.join(N2)
    before = show.state.copy()
    reason = show.status(N1, target, {"node": N2})
    assert_recorded_noop(show, before, reason, "status")
    assert show.state.nodes == {N2: {"online": True, "seq": 1, "pong": 0}}


@pytest.mark.parametrize("data", [None, {}, {"node": 7}], ids=["null", "empty", "int"])
def test_liveness_without_a_node_id_is_refused(data: dict[str, Any] | None) -> None:
    show = Show()
    before = show.state.copy()
    assert_recorded_noop(show, before, show.status(CONTROLLER, "node_joined", data), "status")
    assert show.state.nodes == {}


def test_node_left_unarms_that_node() -> None:
    show = armed_show(N1, N2)
    show.leave(N2)
    assert N2 not in show.state.armed_nodes
    assert N1 in show.state.armed_nodes
    assert show.state.engine["armed"] == "no"
    assert show.go() is not None
    show.join(N2)
    assert show.state.engine["armed"] == "no"
    show.arm(N2)
    assert show.state.engine["armed"] == "yes"


def test_generic_status_kept_with_seq() -> None:
    show = Show()
    outcome = {"cue": C1, "outcome": "ok"}
    assert show.status(N1, "action_cue_outcome", outcome) is None
    assert show.status(N2, "action_cue_outcome", None) is None
    assert show.state.status == {
        N1: {"action_cue_outcome": {"data": outcome, "seq": 1}},
        N2: {"action_cue_outcome": {"data": None, "seq": 2}},
    }
    show.status(N1, "action_cue_outcome", {"cue": C2})
    assert show.state.status[N1]["action_cue_outcome"] == {"data": {"cue": C2}, "seq": 3}
    assert show.state.ignored == 0


def test_interpreted_status_is_also_kept_generically() -> None:
    show = Show()
    show.status(N1, "timecode", {"value": 40})
    assert show.state.status[N1]["timecode"] == {"data": {"value": 40}, "seq": 1}


# ---------------------------------------------------------------- commands


def test_load() -> None:
    show = Show()
    show.join(N1)
    show.status(N1, "nextcue", {"nextcue": C1})
    show.status(N1, "timecode", {"value": 99})
    show.start_cue(N1, C1)
    assert show.load("my_show") is None
    engine = show.state.engine
    assert engine["load"] == "my_show"
    assert engine["running"] == "no"
    assert engine["armed"] == "no"
    assert engine["nextcue"] == ""
    assert engine["timecode"] == 0
    assert engine["currentcue"] == []
    assert show.state.cues == {}
    assert show.state.required == [N1]
    assert show.state.commands["load"] == {
        "data": {"value": "my_show", "address": "/engine/command/load"},
        "seq": 5,
        "sender": CONTROLLER,
        "accepted": True,
    }
    assert fires(show.last, show.reasons[-1])


def test_load_without_value() -> None:
    show = Show()
    assert show.command("load", None) is None
    assert show.state.engine["load"] == ""


def test_load_refused_while_running() -> None:
    show = running_show()
    show.start_cue(N1, C1)
    before = show.state.copy()
    reason = show.load("beta")
    assert_recorded_noop(show, before, reason, "commands")
    assert show.state.engine["load"] == "alpha"
    assert show.state.commands["load"]["accepted"] is False
    assert show.state.commands["load"]["seq"] == show.state.seq
    assert not fires(show.last, reason)


def test_go_refused_when_not_armed() -> None:
    show = Show()
    show.join(N1, N2)
    show.load("alpha")
    show.arm(N1)
    before = show.state.copy()
    reason = show.go()
    assert reason is not None
    assert "armed" in reason
    assert_recorded_noop(show, before, reason, "commands")
    assert show.state.engine["running"] == "no"
    assert show.state.commands["go"]["accepted"] is False
    assert not fires(show.last, reason)


def test_go_before_any_load_is_refused() -> None:
    show = Show()
    reason = show.go()
    assert reason is not None
    assert not fires(show.last, reason)
    assert show.state.engine["running"] == ""


def test_go_accepted_when_armed() -> None:
    show = armed_show(N1, N2)
    reason = show.go()
    assert reason is None
    assert show.state.engine["running"] == "yes"
    assert show.state.commands["go"]["accepted"] is True
    assert fires(show.last, reason)


def test_stop() -> None:
    show = running_show()
    show.start_cue(N1, C1)
    show.start_cue(N1, C2)
    show.cue("update", N1, C1, {"percentage": 50})
    show.cue("remove", N1, C2)
    show.status(N1, "nextcue", {"nextcue": C2})
    show.status(N1, "timecode", {"value": 5000})
    assert show.stop() is None
    engine = show.state.engine
    assert (engine["running"], engine["armed"]) == ("no", "no")
    assert engine["currentcue"] == []
    assert engine["nextcue"] == ""
    assert engine["timecode"] == 0
    assert engine["load"] == "alpha"
    assert {cue: info["status"] for cue, info in show.state.cues.items()} == {C1: 0, C2: 0}
    assert show.state.armed_nodes == {}
    assert fires(show.last, None)
    # nodes re-arm after a stop, and GO is possible again
    assert show.go() is not None
    show.arm(N1)
    assert show.go() is None


def test_unload() -> None:
    show = armed_show(N1)
    show.start_cue(N1, C1)
    assert show.command("unload", {"value": None}) is None
    engine = show.state.engine
    assert (engine["load"], engine["armed"], engine["running"]) == ("", "", "")
    assert show.state.cues == {}
    assert show.state.required == []
    assert show.state.armed_nodes == {}


def test_unload_refused_while_running() -> None:
    show = running_show()
    before = show.state.copy()
    reason = show.command("unload", None)
    assert_recorded_noop(show, before, reason, "commands")
    assert show.state.engine["load"] == "alpha"
    assert show.state.commands["unload"]["accepted"] is False


def test_command_cue_enabled() -> None:
    show = Show()
    assert show.command("cue_enabled", {"value": f"{C1} 0"}) is None
    assert show.state.cue_enabled == {C1: False}
    assert show.command("cue_enabled", {"value": f"{C1} 1"}) is None
    assert show.state.cue_enabled == {C1: True}


@pytest.mark.parametrize("data", [None, {}, {"value": None}], ids=["null", "empty", "none"])
def test_command_cue_enabled_without_value_is_refused(data: dict[str, Any] | None) -> None:
    show = Show()
    before = show.state.copy()
    reason = show.command("cue_enabled", data)
    assert_recorded_noop(show, before, reason, "commands")
    assert not fires(show.last, reason)


def test_player_control_mixer_volume() -> None:
    show = Show()
    address = f"/{N1}/audio/mixer/0/3/volume"
    assert show.command("player_control", {"address": address, "value": 0.25}) is None
    assert show.state.mixer == {f"{N1}/0/3": 0.25}
    show.command("player_control", {"address": address, "value": 1})
    show.command("player_control", {"address": f"/{N2}/audio/mixer/1/master/volume", "value": 0})
    assert show.state.mixer == {f"{N1}/0/3": 1.0, f"{N2}/1/master": 0.0}
    assert all(isinstance(v, float) for v in show.state.mixer.values())
    assert show.state.commands["player_control"]["seq"] == 3


@pytest.mark.parametrize(
    ("address", "value"),
    [
        (f"/{N1}/video/mixer/0/position", [0.5, 0.5]),
        (f"/{N1}/audio/mixer/0/volume", 0.5),
        (f"/{N1}/audio/player/0/1/volume", 0.5),
        (f"/{N1}/audio/mixer/0/1/volume/extra", 0.5),
    ],
)
def test_player_control_other_addresses_leave_the_mixer(address: str, value: Any) -> None:
    show = Show()
    assert show.command("player_control", {"address": address, "value": value}) is None
    assert show.state.mixer == {}
    assert show.state.commands["player_control"]["data"]["address"] == address


@pytest.mark.parametrize("target", ["setnextcue", "ping", "pause", "deploy", "something_new"])
def test_generic_command_kept_with_seq(target: str) -> None:
    show = Show()
    show.join(N1)
    data = {"value": C1, "address": f"/engine/command/{target}"}
    before = show.state.copy()
    reason = show.command(target, data, sender="ui-1")
    assert reason is None
    assert show.state.commands[target] == {
        "data": data,
        "seq": 2,
        "sender": "ui-1",
        "accepted": True,
    }
    assert without(show.state, "commands") == without(before, "commands")
    assert fires(show.last, reason)


def test_status_events_never_fire() -> None:
    show = armed_show(N1)
    assert show.reasons[-1] is None
    assert not fires(show.last, None)
    show.start_cue(N1, C1)
    assert not fires(show.last, None)


def test_an_event_no_handler_knows_is_a_recorded_noop() -> None:
    # validation refuses command/add, but apply is total: an old or foreign log may hold one
    show = Show()
    before = show.state.copy()
    reason = show.do("command", "add", CONTROLLER, "go", None, validate=False)
    assert_recorded_noop(show, before, reason)
    assert not fires(show.last, reason)


def test_whole_show_is_deterministic() -> None:
    first = running_show()
    first.start_cue(N1, C1, "0")
    first.cue("update", N1, C1, {"percentage": 50})
    first.cue("remove", N1, C1)
    first.stop()
    again = fold(first.events)
    assert again == first.state
    assert digest(again) == digest(first.state)
    assert again.ignored == first.state.ignored == 0


@pytest.mark.parametrize(
    ("sender", "target", "data"),
    [
        ("n1", "armed_ready", {"armed": "yes"}),
        ("n1", "node_joined", {"node": "n1"}),
        ("n1", "node_left", {"node": "n1"}),
    ],
)
def test_a_refused_status_changes_nothing_but_the_ignored_count(
    sender: str, target: str, data: dict[str, Any]
) -> None:
    state = State()
    before = state.to_dict()
    reason = apply(state, make_event(1, "status", "update", sender, target, data))
    assert reason is not None
    after = state.to_dict()
    assert after["ignored"] == 1 and after["seq"] == 1
    assert {**after, "ignored": 0, "seq": 0} == before
