"""The CUT engine, one module per step; `edgecut.cut` names what a user needs (its public API)."""
