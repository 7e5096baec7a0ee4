"""``cuelog bench``: benchmarks whose every figure comes with a baseline measured in the same run.

Nothing here asserts a speed: each suite measures, then prints a table of figures, baselines,
ratios and targets. The package, by job:

- `command`: the command line (``cuelog bench [log|replication|gateway|replay|all]``);
- measurements, one module a suite: `log_measure`, `replay_measure`, `replication_measure`,
  `gateway_measure` (with `gateway_dump` and `gateway_latency` for its bigger phases);
- baselines: `baselines` (measured in this process: raw sqlite3, python-osc, round trips),
  `replication_baselines` and `gateway_baselines` (baseline systems run as processes);
- roles, the processes a suite starts: `replication_roles` and `gateway_roles`, the lines to
  them (`replication_procs`, `gateway_link`, `gateway_procs`), their entry points
  (`replication_child`, `gateway_child`) and the gateway's test clients (`gateway_clients`);
- printing: `table` (the row-table engine), one `*_report` module a suite with its rows;
- data: `data` (show logs and operations) and `gateway_show` (the big show and its frames);
- `common`: what every suite shares (phases, errors, percentiles, ratios, CPU time).
"""

from __future__ import annotations

from tools.bench.command import add_parser, run

__all__ = ["add_parser", "run"]
