"""Element-wise (per-weight) pruning masks: the CUT paper's unstructured mode and its baselines.

Scores (`ELEMENT_CRITERIA`, one per weight of every Conv2d / Linear of the selected-task model):
- snip (CUT / DiSparse sensitivity): per task t, the sum over calibration batches of |w * dL_t/dw|
  at the trained weights, over the shared trunk and t's own head. Label-free (distill objective):
  the mean square of the same term on random output projections (see objective.py).
- disparse-pt (DiSparse's pre-trained recipe, `disparse_prune_pretrained`): per task t, the sum over
  calibration batches of |dL_t/dw|, times w^2, over the shared trunk and t's own head.
- snip-init: SNIP at a fresh initialisation with the unweighted sum of the selected tasks' losses.
- magnitude: |w|, one-shot global magnitude pruning (LTH-style).
- random: seeded uniform.
The last three are task-agnostic: they return one group, `ALL`, covering every prunable weight.

Masks. Each group is normalised to sum 1 and cut by one global top-k across layers, so task t keeps
weight w at a keep ratio rho <=> w's rank percentile p_t(w) within t's group (trunk + t's head) is
> 1 - rho. The trunk's per-task masks are fused by an `ELEMENT_FUSIONS` rule, expressed (as in
fusion.py) as a fused score whose threshold at 1 - rho reproduces the rule at every rho:
- vote (CUT): keep if at least v tasks keep it = the v-th largest p_t; v = min(2, T): for two tasks
  the intersection, for three the majority, for one task the task's own mask (the published v = 2
  would empty the trunk: see `vote_keeps`).
- union (DiSparse: prune only what every task prunes) = max p_t; intersection = min p_t.
- mean / max: of the tasks' normalised scores weighted by user priority (one top-k over the result;
  a task's score is 0 outside its group).
Under the vote, union and intersection, heads keep their own task's mask (their own p_t).

`masks_at_sparsity` keeps the top (1 - sparsity) share of all prunable weights by fused score: the
same as choosing the common per-task keep ratio at which the fused mask reaches the requested
sparsity, so rules are compared at equal sparsity. `calibrate=False` instead gives every task the keep
ratio `keep` (default 1 - sparsity) and reports whatever sparsity the fusion results in: the papers'
protocol. Their code does not use 1 - sparsity but a hand-tuned keep table per data set: CUT's
(ESCM create_pruning.ipynb) and DiSparse's static setup (create_pruned_net.py) on NYUv2 keep 0.675 /
0.46 / 0.257 / 0.08 per task for "30 / 50 / 70 / 90 %" (1 - sparsity only for other levels):
`PAPERS_KEEP_NYUV2`. (DiSparse's pre-trained setup uses 0.7 / 0.5 / 0.3 / 0.1 there.)

Masks are applied with torch.nn.utils.prune (weight = weight_orig * weight_mask on every forward),
so fine-tuning can never revive a pruned weight.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from edgecut.server.cut.fusion import kth_largest, vote_threshold
from edgecut.server.cut.importance import ScoreInputs, TaskScores, scoring_mode
from edgecut.server.cut.recover import reinitialise
from edgecut.server.mtl.contract import MultiTaskModel

ALL = "*"  # the group of a task-agnostic criterion
# The per-task keep ratio the CUT (ESCM) and DiSparse code use on NYUv2 for each nominal sparsity.
PAPERS_KEEP_NYUV2 = {0.3: 0.675, 0.5: 0.46, 0.7: 0.257, 0.9: 0.08}


def papers_keep(sparsity: float) -> float:
    """The papers' per-task keep ratio for a nominal sparsity (their table, else 1 - sparsity)."""
    return next((k for s, k in PAPERS_KEEP_NYUV2.items() if abs(s - sparsity) < 1e-9), 1 - sparsity)


PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
WeightMap = dict[str, torch.Tensor]  # qualified module name -> a tensor shaped like its weight
ElementScores = dict[str, WeightMap]  # task name (or ALL) -> per-weight scores


ElementCriterion = Callable[[ScoreInputs], ElementScores]
ELEMENT_CRITERIA: dict[str, ElementCriterion] = {}


def element_criterion(name: str) -> Callable[[ElementCriterion], ElementCriterion]:
    def deco(fn: ElementCriterion) -> ElementCriterion:
        ELEMENT_CRITERIA[name] = fn
        return fn

    return deco


def prunable(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def region(model: MultiTaskModel) -> dict[str, str | None]:
    """For each prunable module, the task whose head holds it (None = shared trunk)."""
    owner: dict[str, str | None] = {}
    for name in prunable(model):
        parts = name.split(".")
        owner[name] = parts[1] if parts[0] == "heads" and len(parts) > 1 else None
    return owner


def _weight(m: nn.Module) -> torch.Tensor:
    w = m.weight
    assert isinstance(w, torch.Tensor)  # Conv2d / Linear
    return w


def _task_weight_grads(inp: ScoreInputs) -> Iterator[tuple[str, str, torch.Tensor, int]]:
    """For every batch and objective term: (task, module name, dL_term/dw, the task's terms per batch),
    over the trunk and the task's own head."""
    model, obj = inp.model, inp.objective
    mods, owner = prunable(model), region(model)
    for bi, batch in enumerate(inp.batches):
        outputs = model(batch["image"])
        terms = [(t, term) for t in model.task_names for term in obj.terms(t, outputs[t], batch, bi)]
        n_terms = {t: sum(1 for u, _ in terms if u == t) for t in model.task_names}
        for i, (task, term) in enumerate(terms):
            names = [n for n in mods if owner[n] in (None, task)]
            grads = torch.autograd.grad(
                term, [_weight(mods[n]) for n in names], retain_graph=i < len(terms) - 1, allow_unused=True
            )
            for n, g in zip(names, grads, strict=True):
                if g is not None:
                    yield task, n, g, n_terms[task]


def _add(acc: WeightMap, name: str, s: torch.Tensor) -> None:
    acc[name] = acc[name] + s if name in acc else s


@element_criterion("snip")
def snip(inp: ScoreInputs) -> ElementScores:
    mods = prunable(inp.model)
    scores: ElementScores = {t: {} for t in inp.model.task_names}
    for task, n, g, n_terms in _task_weight_grads(inp):
        s = _weight(mods[n]).detach() * g
        _add(scores[task], n, s.pow(2) / n_terms if inp.objective.squared else s.abs())
    return scores


@element_criterion("disparse-pt")
def disparse_pretrained(inp: ScoreInputs) -> ElementScores:
    mods = prunable(inp.model)
    grads: ElementScores = {t: {} for t in inp.model.task_names}
    for task, n, g, _ in _task_weight_grads(inp):
        _add(grads[task], n, g.abs())
    return {t: {n: g * _weight(mods[n]).detach().pow(2) for n, g in per.items()} for t, per in grads.items()}


@element_criterion("snip-init")
def snip_init(inp: ScoreInputs) -> ElementScores:
    fresh = copy.deepcopy(inp.model)
    with torch.random.fork_rng():
        torch.manual_seed(inp.seed)
        reinitialise(fresh)
    fresh.train()  # a fresh net has no running statistics worth using: BN normalises each batch
    mods, obj = prunable(fresh), inp.objective
    scores: WeightMap = {}
    for bi, batch in enumerate(inp.batches):
        terms = obj.summed(fresh(batch["image"]), batch, bi)
        for i, term in enumerate(terms):
            grads = torch.autograd.grad(
                term, [_weight(m) for m in mods.values()], retain_graph=i < len(terms) - 1, allow_unused=True
            )
            for (n, m), g in zip(mods.items(), grads, strict=True):
                if g is not None:
                    s = _weight(m).detach() * g
                    _add(scores, n, s.pow(2) / len(terms) if obj.squared else s.abs())
    return {ALL: scores}


@element_criterion("magnitude")
def magnitude(inp: ScoreInputs) -> ElementScores:
    return {ALL: {n: _weight(m).detach().abs() for n, m in prunable(inp.model).items()}}


@element_criterion("random")
def random_scores(inp: ScoreInputs) -> ElementScores:
    g = torch.Generator().manual_seed(inp.seed)
    return {ALL: {n: torch.rand(_weight(m).shape, generator=g) for n, m in prunable(inp.model).items()}}


def normalise(scores: ElementScores) -> ElementScores:
    """Each group divided by its total over all its weights (a group of zeros stays zero)."""
    out: ElementScores = {}
    for group, wm in scores.items():
        total = sum((float(s.sum()) for s in wm.values()), 0.0)
        out[group] = {n: s.float() / max(total, 1e-30) for n, s in wm.items()}
    return out


def score_elements(name: str, inp: ScoreInputs) -> ElementScores:
    """Per-weight scores of criterion `name`, normalised to sum 1 per group; the model is unchanged."""
    if name not in ELEMENT_CRITERIA:
        raise KeyError(
            f"unknown element criterion {name!r}: choose one of {', '.join(sorted(ELEMENT_CRITERIA))}"
        )
    with scoring_mode(inp.model, inp.batchnorm):
        raw = ELEMENT_CRITERIA[name](inp)
    return normalise({g: {n: s.detach() for n, s in wm.items()} for g, wm in raw.items()})


class Layout:
    """The prunable weights of one model flattened into one vector, with each entry's owner."""

    def __init__(self, model: MultiTaskModel) -> None:
        mods, owner = prunable(model), region(model)
        self.tasks = model.task_names
        self.names = list(mods)
        self.shapes = [_weight(mods[n]).shape for n in self.names]
        sizes = [s.numel() for s in self.shapes]
        self.n = sum(sizes)
        index: dict[str | None, int] = {None: -1, **{t: i for i, t in enumerate(self.tasks)}}
        self.owner = torch.cat(
            [
                torch.full((k,), index[owner[n]], dtype=torch.long)
                for n, k in zip(self.names, sizes, strict=True)
            ]
        )
        self.trunk = self.owner == -1

    def flat(self, wm: WeightMap) -> torch.Tensor:
        return torch.cat(
            [
                wm[n].flatten().float() if n in wm else torch.zeros(s.numel())
                for n, s in zip(self.names, self.shapes, strict=True)
            ]
        )

    def unflat(self, vec: torch.Tensor) -> WeightMap:
        out, at = {}, 0
        for n, s in zip(self.names, self.shapes, strict=True):
            out[n] = vec[at : at + s.numel()].view(s)
            at += s.numel()
        return out

    def member(self, ti: int) -> torch.Tensor:
        """Entries in task `ti`'s group: the trunk and its own head."""
        return self.trunk | (self.owner == ti)


def _percentile(vec: torch.Tensor) -> torch.Tensor:
    """Each entry's rank as a fraction in (0, 1], 1 = the highest score; ties broken by position."""
    order = vec.argsort(stable=True)
    ranks = torch.empty_like(vec)
    ranks[order] = torch.arange(1, len(vec) + 1, dtype=vec.dtype)
    return ranks / len(vec)


@dataclass(frozen=True)
class RuleInputs:
    percentiles: torch.Tensor  # T x M over the trunk, each task's rank within its own group
    scores: torch.Tensor  # T x M, each task's normalised scores
    weights: torch.Tensor  # T user priorities


ElementFusion = Callable[[RuleInputs], torch.Tensor]
ELEMENT_FUSIONS: dict[str, ElementFusion] = {}
PERCENTILE_RULES = frozenset({"vote", "union", "intersection"})


def element_fusion(name: str) -> Callable[[ElementFusion], ElementFusion]:
    def deco(fn: ElementFusion) -> ElementFusion:
        ELEMENT_FUSIONS[name] = fn
        return fn

    return deco


@element_fusion("vote")
def vote(r: RuleInputs) -> torch.Tensor:
    return kth_largest(r.percentiles, vote_threshold(r.percentiles.shape[0]))


@element_fusion("union")
def union(r: RuleInputs) -> torch.Tensor:
    return r.percentiles.max(0).values


@element_fusion("intersection")
def intersection(r: RuleInputs) -> torch.Tensor:
    return r.percentiles.min(0).values


@element_fusion("mean")
def mean(r: RuleInputs) -> torch.Tensor:
    return (r.scores * r.weights[:, None]).sum(0) / r.weights.sum()


@element_fusion("max")
def maximum(r: RuleInputs) -> torch.Tensor:
    return (r.scores * r.weights[:, None]).max(0).values


def fused_scores(
    scores: ElementScores, layout: Layout, rule: str, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """One score per prunable weight (higher = kept longer); task-agnostic scores pass through."""
    if ALL in scores:
        return layout.flat(scores[ALL])
    if rule not in ELEMENT_FUSIONS:
        raise KeyError(f"unknown element fusion {rule!r}: choose one of {', '.join(sorted(ELEMENT_FUSIONS))}")
    missing = [t for t in layout.tasks if t not in scores]
    if missing:
        raise ValueError(f"no scores for task {missing[0]!r}")
    w = torch.ones(len(layout.tasks)) if weights is None else weights.float()
    pct = torch.zeros(len(layout.tasks), layout.n)
    norm = torch.zeros(len(layout.tasks), layout.n)
    for ti, task in enumerate(layout.tasks):
        vec, member = layout.flat(scores[task]), layout.member(ti)
        pct[ti, member] = _percentile(vec[member])
        norm[ti, member] = vec[member] / vec[member].sum().clamp_min(1e-30)
    if rule not in PERCENTILE_RULES:  # score rules: a task's score is 0 outside its group
        return ELEMENT_FUSIONS[rule](RuleInputs(pct, norm, w))
    fused = torch.zeros(layout.n)
    fused[layout.trunk] = ELEMENT_FUSIONS[rule](RuleInputs(pct[:, layout.trunk], norm[:, layout.trunk], w))
    for ti in range(len(layout.tasks)):
        head = layout.owner == ti
        fused[head] = pct[ti, head]
    return fused


def per_task_keeps(scores: ElementScores, layout: Layout, keep: float) -> dict[str, torch.Tensor]:
    """Each task's own global top-k (flat bool over the layout; False outside its group)."""
    out = {}
    for ti, task in enumerate(layout.tasks):
        member = layout.member(ti)
        mask = torch.zeros(layout.n, dtype=torch.bool)
        mask[member] = _percentile(layout.flat(scores[task])[member]) > 1 - keep
        out[task] = mask
    return out


def vote_keeps(keeps: dict[str, torch.Tensor], layout: Layout, v: int) -> torch.Tensor:
    """The trunk kept by a literal vote with threshold `v` (no guard), heads by their own task."""
    stacked = torch.stack([keeps[t] for t in layout.tasks])
    out = torch.zeros(layout.n, dtype=torch.bool)
    out[layout.trunk] = stacked[:, layout.trunk].sum(0) >= v
    for ti, t in enumerate(layout.tasks):
        out[layout.owner == ti] = keeps[t][layout.owner == ti]
    return out


@dataclass
class MaskSet:
    masks: WeightMap  # bool, per prunable module
    sparsity: float  # share of the prunable weights removed
    trunk_kept: float  # share of the trunk's prunable weights kept
    keep_ratio: float  # the per-task keep ratio rho the fused mask corresponds to (nan if none)


def masks_at_sparsity(
    scores: ElementScores,
    model: MultiTaskModel,
    sparsity: float,
    rule: str = "vote",
    weights: torch.Tensor | None = None,
    calibrate: bool = True,
    keep: float | None = None,
) -> MaskSet:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    layout = Layout(model)
    fused = fused_scores(scores, layout, rule, weights)
    by_percentile = ALL not in scores and rule in PERCENTILE_RULES
    if calibrate or not by_percentile:
        k = max(1, round((1 - sparsity) * layout.n))
        order = torch.argsort(fused, descending=True, stable=True)
        kept = torch.zeros(layout.n, dtype=torch.bool)
        kept[order[:k]] = True
        rho = 1 - float(fused[order[k - 1]]) if by_percentile else float("nan")
    else:
        rho = 1 - sparsity if keep is None else keep
        kept = fused > 1 - rho
    return MaskSet(
        layout.unflat(kept),
        1 - float(kept.sum()) / layout.n,
        float(kept[layout.trunk].float().mean()) if layout.trunk.any() else 1.0,
        rho,
    )


def kept_shares(masks: WeightMap) -> dict[str, float]:
    """Share of each module's weights a mask set keeps, by qualified module name."""
    return {n: float(m.float().mean()) for n, m in masks.items()}


def apply_masks(model: nn.Module, masks: WeightMap) -> None:
    """Fix the masks: every forward uses weight_orig * weight_mask, so pruned weights stay zero."""
    for name, m in prunable(model).items():
        if name in masks:
            torch_prune.custom_from_mask(m, "weight", masks[name].to(torch.bool))


def make_permanent(model: nn.Module) -> None:
    """Fold the masks into plain weights (zeros stay): what an exported dense model carries."""
    for m in prunable(model).values():
        if torch_prune.is_pruned(m) and hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")


def mask_sparsity(model: nn.Module) -> float:
    """Share of the prunable weights that are masked out (0 for an unmasked model)."""
    total = zeros = 0
    for m in prunable(model).values():
        mask = getattr(m, "weight_mask", None)
        w = _weight(m)
        total += w.numel()
        zeros += int((~mask.bool()).sum()) if isinstance(mask, torch.Tensor) else 0
    return zeros / max(total, 1)


def channel_scores(scores: ElementScores, model: MultiTaskModel) -> TaskScores:
    """The same scores at channel granularity (summed per output channel), keyed by `model`'s modules."""
    mods = dict(model.named_modules())

    def per_channel(wm: WeightMap) -> dict[nn.Module, torch.Tensor]:
        return {mods[n]: s.flatten(1).sum(1) if s.dim() > 1 else s for n, s in wm.items() if n in mods}

    if ALL in scores:
        shared = per_channel(scores[ALL])
        return {t: dict(shared) for t in model.task_names}
    return {t: per_channel(scores[t]) for t in model.task_names}
