"""Tables of per-task metrics for the terminal (rich) and for docs/benchmarks.md (Markdown)."""

from __future__ import annotations

from rich.table import Table

from edgecut.server.mtl.evaluate import Metrics
from edgecut.server.mtl.metric_names import LOWER_IS_BETTER
from edgecut.server.mtl.tasks import TaskSpec


def _rows(metrics: Metrics, baseline: Metrics) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for task, values in metrics.items():
        for k, v in values.items():
            b = baseline.get(task, {}).get(k)
            better = "lower" if k in LOWER_IS_BETTER else "higher"
            rows.append((task, k, f"{v:.4f}", "" if b is None else f"{b:.4f}", better))
    return rows


def metrics_table(metrics: Metrics, baseline: Metrics, specs: dict[str, TaskSpec]) -> Table:
    table = Table(title="per-task metrics (validation data)")
    for col in ("task", "metric", "model", "trivial baseline", "better"):
        table.add_column(col)
    for row in _rows(metrics, baseline):
        table.add_row(*row)
    return table


def metrics_markdown(metrics: Metrics, baseline: Metrics) -> str:
    lines = ["| task | metric | model | trivial baseline | better |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in _rows(metrics, baseline)]
    return "\n".join(lines)
