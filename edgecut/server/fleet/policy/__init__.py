"""Budgets, the latency model, rate limits and broker load: the rules the fleet serves by."""
