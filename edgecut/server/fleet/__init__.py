"""The fleet service: what `edgecut server` runs (no torch: the engine plugs in through `spec.Engine`).

| where | what |
|---|---|
| `app.py` | `FleetServer`: builds the pieces below, starts and stops them (the dashboard is wired above, in edgecut/server/app.py) |
| `settings.py`, `cli.py` | the server's settings and `edgecut server` / `edgecut command` |
| `events.py` | `FleetEvent` and `Observers`: what happens, for metrics, history, the dashboard and rollouts |
| `link/` | the device-facing adapters: MQTT bridge (needs in; reports; offers and errors out), gRPC API, wire checks and error mapping, offer signing |
| `state/` | the fleet database (one repository per aggregate: devices, offers, jobs + leases, waiters), history, the artifact store (local or S3) |
| `jobs/` | builds (manager, build workers), refinements, store scrubbing, staged rollouts |
| `policy/` | budgets, the latency model, rate limits, broker load |
| `commands/` | operator commands: the dashboard's desk and the shell's client |
"""
