"""Operator commands: signed, sent once, never retained; from the dashboard (desk) or a shell (client)."""
