"""`edgecut demo`: the whole system on one machine — broker, fleet server and real agent processes.

cli.py registers the command (light imports); run.py orchestrates; profiles.py names the simulated
devices; agents.py runs agent processes and drives inference through their local API; events.py
turns MQTT traffic, build progress and agent logs into one live log; table.py scores the run.
"""

__all__: list[str] = []
