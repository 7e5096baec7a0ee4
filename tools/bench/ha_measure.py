"""``cuelog bench ha``: how long a takeover takes, and what a synchronous standby costs.

The rig (`tools.bench.ha_cluster`): a three-member etcd on loopback (one member per controller
host, one on a node machine), two ``cuelog controller --ha`` candidates with a lease of 2 s,
and a writer node submitting one op at a time (the next as soon as the last is acknowledged,
with a small pause).

- **Takeover.** Each round kills whoever leads with SIGKILL (a process death), or kills it and
  its host's etcd member (a host death), then measures from the kill to the writer's first
  acknowledgement after it (from the new leader: the old one is dead; a reply already in
  the writer's socket is read within milliseconds, so acknowledgements less than 20 ms after
  the kill are not counted). The killed candidate is started again and the next round waits
  until it is the synchronous standby, holding the whole log.
- **Latency.** Submit to acknowledgement with a synchronous standby, then with the standby
  stopped (the leader acknowledges alone), in the same run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Final

from tools.bench.common import Figures, PhaseError, ms, run_phases
from tools.bench.ha_cluster import Candidates, Etcd, WaitTimeout, Writer, etcd_binary, wait_for

TTL: Final = 2
#: a reply already on its way when the leader died is not the new leader's
IN_FLIGHT: Final = 0.02


def run_ha(quick: bool, scratch: Path) -> Figures:
    """The ha suite's figures (see the module docstring)."""
    binary = etcd_binary()
    figures: Figures = {"ttl_s": TTL}
    if binary is None:
        figures["error"] = "etcd is not installed (apt-get install etcd-server)"
        return figures
    scratch = scratch / "ha"
    scratch.mkdir(parents=True, exist_ok=True)
    rounds = 5 if quick else 20
    samples = 100 if quick else 400
    etcd = Etcd(scratch / "etcd", 3, binary)
    rig = Candidates(scratch, etcd.endpoints, ["a", "b"], ttl=TTL)
    member = {"a": "e0", "b": "e1"}
    rig.etcd_of = {
        "a": ",".join(etcd.endpoint(n) for n in ("e0", "e1", "e2")),
        "b": ",".join(etcd.endpoint(n) for n in ("e1", "e2", "e0")),
    }
    state = {"leader": ""}
    for quiet in ("cuelog.node", "cuelog.replica"):  # the writer's redials are not the report
        logging.getLogger(quiet).setLevel(logging.ERROR)
    try:
        rig.start("a")
        state["leader"] = rig.wait_leader(timeout=30)
        rig.start("b")
        with Writer(rig.addresses, depth=1, pace=0.005) as writer:

            def latency() -> Figures:
                leader = state["leader"]
                standby = rig.wait_synchronous(leader, timeout=30)
                since = time.monotonic()
                wait_for("sync samples", lambda: len(writer.latencies_since(since)) >= samples, 120)
                sync = writer.latencies_since(since)[:samples]
                rig.procs[standby].signal(signal.SIGTERM)
                rig.procs[standby].proc.wait(15)
                wait_for("the leader alone", lambda: _alone(rig, leader), 30)
                since = time.monotonic()
                wait_for(
                    "alone samples", lambda: len(writer.latencies_since(since)) >= samples, 120
                )
                alone = writer.latencies_since(since)[:samples]
                rig.start(standby)
                rig.wait_synchronous(leader, timeout=60)
                return {"sync": ms(sync), "alone": ms(alone)}

            def takeovers(host: bool) -> Figures:
                took: list[float] = []
                for _ in range(rounds):
                    leader = state["leader"]
                    rig.wait_synchronous(leader, timeout=60)
                    since = time.monotonic()
                    wait_for("traffic", lambda s=since: len(writer.latencies_since(s)) >= 5, 30)  # type: ignore[misc]
                    killed = time.monotonic()
                    rig.kill9(leader)
                    if host:
                        etcd.kill(member[leader])
                    wait_for(
                        "the first acknowledgement after the kill",
                        lambda k=killed: writer.first_ack_after(k + IN_FLIGHT) is not None,  # type: ignore[misc]
                        60,
                    )
                    first = writer.first_ack_after(killed + IN_FLIGHT)
                    assert first is not None
                    took.append(first - killed)
                    state["leader"] = rig.wait_leader(other_than=leader, timeout=30)
                    if host:
                        etcd.start(member[leader])
                    rig.start(leader)
                figures_ = ms(took)
                return {
                    **figures_,
                    "p50_s": figures_["p50_ms"] / 1000,
                    "p99_s": figures_["p99_ms"] / 1000,
                }

            run_phases(
                [
                    ("latency", "submit -> ack, with and without the standby", latency),
                    ("process", f"{rounds} process deaths", lambda: takeovers(False)),
                    (
                        "host",
                        f"{rounds} host deaths (with its etcd member)",
                        lambda: takeovers(True),
                    ),
                ],
                figures,
            )
            writer.pause()
    except WaitTimeout as exc:
        raise PhaseError(str(exc)) from None
    finally:
        with contextlib.suppress(Exception):
            rig.stop_all()
        etcd.close()
    figures["rounds"] = rounds
    return figures


def _alone(rig: Candidates, leader: str) -> bool:
    st = rig.status(leader)
    cluster = (st or {}).get("cluster") or {}
    return bool(st) and cluster.get("sync_standby") is None and not cluster.get("held")
