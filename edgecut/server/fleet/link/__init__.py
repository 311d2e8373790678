"""MQTT and gRPC adapters: what devices send is checked here, what they get is built and signed here."""
