"""The fleet dashboard: JSON API, pages, server-sent events and /metrics over the registry (FastAPI)."""
