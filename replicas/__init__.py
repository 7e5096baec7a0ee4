"""Replication over NNG: the controller's sequencer and publisher, node replicas, catch-up,
liveness, and the seed-compatible API (`NodeCommunications`, `NodesHub`, `NodeOperation` …)."""

from eventlog import ActionType, OperationType
from replicas.compat import (
    CUE_STATUS_UPDATE_HZ,
    AsyncCommsThread,
    NodeCommunications,
    NodeOperation,
    NodesHub,
)
from replicas.controller import DEFAULT_LISTEN, Controller
from replicas.node import NodeReplica
from replicas.outbox import OperationRefused, OutboxFull
from replicas.protocol import ProtocolError, events_address
from replicas.replica import MemoryStore, ReplicaCore
from replicas.sequencer import ControllerCore

__all__ = [
    "CUE_STATUS_UPDATE_HZ",
    "DEFAULT_LISTEN",
    "ActionType",
    "AsyncCommsThread",
    "Controller",
    "ControllerCore",
    "MemoryStore",
    "NodeCommunications",
    "NodeOperation",
    "NodeReplica",
    "NodesHub",
    "OperationRefused",
    "OperationType",
    "OutboxFull",
    "ProtocolError",
    "ReplicaCore",
    "events_address",
]
