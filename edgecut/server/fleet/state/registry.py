"""Fleet registry: the fleet database and its repositories, one per aggregate.

`Registry(url)` opens the database (database.py: SQLite by default, PostgreSQL for several replicas)
and holds one small repository per aggregate, each a few short transactions over the shared tables:

| attribute | repository | what |
|---|---|---|
| `devices` | devices.py | needs, resources, state, telemetry, errors, command acks |
| `offers` | offers.py | signed offers, the offer counter, swaps reported back |
| `variants` | variants.py | a stored model's other precisions (int8, fp16) |
| `statistics` | statistics.py | statistics companions, the summaries devices sent and their sequences |
| `adaptations` | adaptations.py | per device, the statistics bucket it was adapted to and its adapted model |
| `jobs` | jobs.py | the build queue, leases and fencing (single flight across replicas) |
| `waiters` | waiters.py | which device waits for which build (answered after a restart too) |
| `rollouts` | rollouts.py | staged rollouts and their verdicts (jobs/rollout.py judges) |
| `commands` | commands.py | operator commands, devices' acks, the audit log (commands/desk.py sends) |

Every table is in schema.py under one metadata (migrations/ upgrades it); the history
(state/history.py) reads and writes its tables through `engine` and `transaction()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.orm import Session

from edgecut.server.fleet.state.adaptations import Adaptations
from edgecut.server.fleet.state.commands import Commands
from edgecut.server.fleet.state.database import Database
from edgecut.server.fleet.state.devices import Devices
from edgecut.server.fleet.state.jobs import Jobs
from edgecut.server.fleet.state.offers import Offers
from edgecut.server.fleet.state.rollouts import Rollouts
from edgecut.server.fleet.state.statistics import Statistics
from edgecut.server.fleet.state.variants import Variants
from edgecut.server.fleet.state.waiters import Waiters


class Registry:
    """The fleet database and its repositories; thread-safe, every call one short transaction."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.url, self.dialect = self.db.url, self.db.dialect  # url is safe to log
        self.migration = self.db.migration  # what opening it did to the schema (edgecut server migrate)
        self.devices = Devices(self.db)
        self.offers = Offers(self.db, self.devices)
        self.variants = Variants(self.db)
        self.statistics = Statistics(self.db)
        self.adaptations = Adaptations(self.db)
        self.jobs = Jobs(self.db)
        self.waiters = Waiters(self.db)
        self.rollouts = Rollouts(self.db)
        self.commands = Commands(self.db)

    @property
    def engine(self) -> SqlEngine:
        """The database engine, for modules that keep their own tables here (fleet/state/history.py)."""
        return self.db.engine

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One short transaction under the registry's writer lock, for those modules' tables."""
        with self.db.transaction() as s:
            yield s

    def close(self) -> None:
        self.db.close()
