"""The reference model the demo tailors: the data dir's own if `edgecut train` made one, else the packaged one.

`--quick` trains a tiny model in seconds (once per data dir) instead.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from edgecut.server.paths import PACKAGED_REFERENCE, reference_checkpoint, scenes_cache, trained_reference


def reference_model(data_dir: Path, quick: bool, console: Console) -> tuple[Path, str, float]:
    """The checkpoint to tailor (trained once, then cached), where it came from, training seconds."""
    from edgecut.server.mtl.train import TrainConfig, train

    if quick:
        path, cfg = data_dir / "quick" / "reference.pt", TrainConfig.quick()
    else:
        path, cfg = reference_checkpoint(data_dir), TrainConfig()
        if path == PACKAGED_REFERENCE and path.exists():
            return path, "the packaged reference model (provenance in reference.metrics.json beside it)", 0.0
        path = trained_reference(data_dir) if not path.exists() else path
    if path.exists():
        return path, f"cached {path} (delete it to train again)", 0.0
    kind = (
        "tiny --quick"
        if quick
        else f"{cfg.image_size}x{cfg.image_size}, until validation stops improving (at most {cfg.epochs} epochs)"
    )
    console.print(
        f"[bold]reference model[/]: none at {path}; training one ({kind}), once — later runs reuse it"
    )
    result = train(cfg, out=path, cache_dir=scenes_cache(data_dir), show_progress=True)
    return path, f"trained just now in {result.seconds:.0f} s -> {path}", result.seconds
