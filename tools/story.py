"""What happened in a show, read from its log alone: the stories ``replay`` tells.

Three ways in, each in its own module:

- `read_show` (`tools.show`): walk the log once and return a `Show`, every node's online
  periods and restarts, every run of every cue with how it ended, every command with whether
  it was refused. ``replay timeline`` draws it; the demo draws it too.
- `cue_story` (`tools.story_cue`): one cue, read with queries for only its rows. Why did it
  play, or why did it not? ``replay cue``.
- `node_story` (`tools.story_node`): one node's joins, leaves, restarts, and which commands it
  fired and how late. ``replay node``.

Each story returns its lines for people and the same facts as a dict for ``--json``. Times are
written by `tools.formats` in the zone `tools.reading.show_zone` picks.
"""

from __future__ import annotations

from tools.show import Show, read_show
from tools.story_cue import cue_story, is_cue
from tools.story_node import node_story

__all__ = ["Show", "cue_story", "is_cue", "node_story", "read_show"]
