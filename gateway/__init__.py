"""The WebSocket + OSC edge for UIs, and the seed's `ControllerCommunications` (it composes the
controller with the gateway, so it lives here, above `replicas`)."""

from gateway.compat import ControllerCommunications

__all__ = ["ControllerCommunications"]
