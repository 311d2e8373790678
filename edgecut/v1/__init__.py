"""The wire contract, generated from protos/edgecut/v1 by `make proto` (do not edit the *_pb2 files)."""
