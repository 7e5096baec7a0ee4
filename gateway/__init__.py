"""The WebSocket + OSC edge for UIs, and the seed's `ControllerCommunications` (it composes the
controller with the gateway, so it lives here, above `replicas`).

Where to look (sans-I/O cores first; only the last group does I/O):

- The dump rule, what a (re)connecting UI is sent: `gateway.dump`.
- What the UI protocol means, per client: `gateway.session` (`GatewayCore`, `Session`,
  `Policy`), with `gateway.outbox` (a client's bounded queue), `gateway.pacing` (coalesced
  progress and faders), `gateway.limits` (frame and sync rates), `gateway.lockout` (wrong
  passcodes) and `gateway.commands` (which operation a UI message or broadcast becomes).
- The show as OSC addresses: `gateway.view`; OSC bytes: `gateway.osc`; address patterns and
  the application's handler table: `gateway.patterns`; the HTTP answers: `gateway.pages`.
- The asyncio shell: `gateway.server` (`Gateway`: websockets server, timers, effects).
- The seed's API: `gateway.compat` (`ControllerCommunications`), with `gateway.handlers` (the
  handler thread), `gateway.editor` (the editor's NNG channel), `gateway.services` (nodeconf,
  hwdiscovery) and `gateway.nngjson` (their JSON).
"""

from gateway.compat import ControllerCommunications

__all__ = ["ControllerCommunications"]
