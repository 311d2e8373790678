"""The fleet service: registry, artifact store, jobs, gRPC API, MQTT bridge, and `edgecut server`.

Light imports only (no torch): the tailoring engine plugs in through `edgecut.server.spec.Engine`.
"""
