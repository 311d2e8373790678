"""The fleet service: what `edgecut server` runs (no torch: the engine plugs in through `spec.Engine`).

- `app.py`: `FleetServer` builds the pieces below, starts and stops them; the dashboard is wired
  above, by the composition root edgecut/server/app.py. `settings.py`, `cli.py`: its settings and
  `edgecut server` / `edgecut command`.
- `events.py`: `FleetEvent` and `Observers`, what happens (for metrics, history, the dashboard,
  rollouts). `error_map.py`: domain errors to wire codes, gRPC statuses and sentences.
- `link/`: the device-facing adapters: the MQTT bridge (needs in; reports; offers and errors out),
  the gRPC API, wire checks, offer signing.
- `state/`: the fleet database (every table in schema.py, its revisions in migrations/), one
  repository per aggregate (devices, offers, jobs + leases, waiters, rollouts, commands); history;
  the artifact store (local or S3).
- `jobs/`: builds (manager, build workers), refinements, store scrubbing, staged rollouts.
- `policy/`: budgets, the latency model, rate limits, broker load.
- `commands/`: operator commands, from the dashboard (desk) or a shell (client).

Imports run link/, commands/ -> jobs/ -> state/, policy/ -> events, error_map.
"""
