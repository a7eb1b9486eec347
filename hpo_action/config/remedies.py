"""Default ranges for the forgetting remedies: searched when a config keeps a skill and gives the rows to replay, but
says nothing about how much to replay or distil.

When `gate.forgetting` has a data set, `data.replay` has a source, and the search sees forgetting (the constraint,
or a forgetting objective), `replay_ratio` and `kl_to_base` that `search.space` does not name are searched over
the ranges below (kl_to_base not for full fine-tuning: it would keep a second copy of the model), and a second
warm-start trial trains the train defaults with both at the top of their range. `train`'s values stay the first
warm start's (moved into the range; a 0, no remedy, starts at REMEDY_STARTS instead); a range or a fixed value
in `search.space` (e.g. `replay_ratio: 0.0`) keeps the user's choice; a grid search gets no extra dimension.

Why these ranges (benchmarks/remedy_ranges.py, results/remedy_ranges.json): on a task unlike the quickstart (the
`alphabet` skill of forgetting_tradeoff.py, scored by per-token loss with a 0.1-nat margin), at a rate high enough
to forget (LoRA, 1e-2, 100 steps), no KL weight alone kept the skill (probe drop 1.0-2.5 nats without replay); a
replay share of 0.1 with a KL weight of 0.3 or more did, and 0.25 did alone, at the validation loss of plain
tuning (0.009-0.024 against 0.011). A share of 0.5 still kept it at a higher loss (0.045-0.084), 0.75 crowded the
new task out (0.79-2.3); a KL weight of 3 slowed learning only without replay (0.24 → 1.55). Continual
pre-training found a few percent of replay enough for a small shift and about a quarter for a large one (Ibrahim
et al. 2024, "Simple and Scalable Strategies to Continually Pre-train Large Language Models"). Hence replay
0.05-0.5 and a KL weight of 0.1-3 on a log scale (distillation weights span decades), the first warm start at
replay 0.25 and KL 1 (the kept cell with the lowest validation loss, 0.009), the strong one at the top of both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpo_action.config._spec import ParamSpec

if TYPE_CHECKING:
    from hpo_action.config._sections import ForgettingBenchmark, HpoConfig

REMEDY_RANGES: dict[str, ParamSpec] = {
    "replay_ratio": ParamSpec(low=0.05, high=0.5),
    "kl_to_base": ParamSpec(low=0.1, high=3.0, log=True),
}


# The first warm start's remedies when train leaves them at 0 (no remedy, outside the ranges): the cell of the
# measurement below with the lowest validation loss among those that kept the skill.
REMEDY_STARTS: dict[str, float] = {"replay_ratio": 0.25, "kl_to_base": 1.0}


def remedy_starts(cfg: HpoConfig) -> dict[str, float]:
    """The first warm start's value of each remedy searched by default that train leaves at 0."""
    return {name: REMEDY_STARTS[name] for name in default_remedy_space(cfg) if not getattr(cfg.train, name)}


def remedies_matter(cfg: HpoConfig) -> bool:
    """Whether the search can weigh the remedies: a skill to keep, rows to replay, and trials judged on forgetting
    (the constraint, or a forgetting objective)."""
    from hpo_action.config._sections import is_forgetting_objective

    search = cfg.search
    if not cfg.data.replay or not any(b.kind == "data" for b in cfg.gate.forgetting):
        return False
    return search.forgetting_constraint or any(is_forgetting_objective(o.metric) for o in search.objectives)


def default_remedy_space(cfg: HpoConfig) -> dict[str, ParamSpec]:
    """The remedy dimensions this config searches without naming them: empty unless the remedies matter, for a grid
    search, and for what `search.space` names."""
    if cfg.search.sampler == "grid" or not remedies_matter(cfg):
        return {}
    given = set(cfg.search.space)
    if cfg.model.method == "full":
        given.add("kl_to_base")
    return {name: spec for name, spec in REMEDY_RANGES.items() if name not in given}


def strong_remedies(params: dict[str, Any], space: dict[str, ParamSpec]) -> dict[str, Any]:
    """`params` with every remedy that `space` searches at the top of its range: the second warm start."""
    strong = dict(params)
    for name in REMEDY_RANGES:
        spec = space.get(name)
        if spec is not None and spec.type in ("float", "int"):
            strong[name] = spec.high
        elif spec is not None and spec.type == "categorical":
            strong[name] = max(spec.choices)
    return strong


def forgetting_remedies(
    cfg: HpoConfig,
    params: dict[str, Any],
    sets: list[ForgettingBenchmark],
    whose: str = "the finalist",
    probe_drops: dict[str, float] | None = None,
) -> list[str]:
    """What to try when forgetting blocks a result (the run doctor's advice, and the search's stopping rule's), in
    the order it usually helps most: replay of the skill, distillation to the base, a smaller step away from it,
    and the constraint that keeps such trials out of the search's choice. `params`: the trial's full parameters.
    With `probe_drops` (the trial's drop on each set's probe): a set that dropped less than its margin was held
    back by the probe's size, not by forgetting, so more probe rows come first."""
    remedies = []
    drops = probe_drops or {}
    unshown = [b for b in sets if b.name in drops and drops[b.name] < (b.margin or 0)]
    if unshown:
        size = cfg.search.forgetting_probe_size or "30% of each set"
        held = ", ".join(f"{b.name} dropped {number(drops[b.name])} < margin {number(b.margin)}" for b in unshown)
        remedies.append(
            f"more probe rows: search.forgetting_probe_size above {size}, or more rows in the set ({whose}: {held}, "
            "within the margin, but on too few probe rows for the gate's test to show it)"
        )
    ratio, kl = float(params.get("replay_ratio") or 0), float(params.get("kl_to_base") or 0)
    if not cfg.data.replay:
        entries = ", ".join(f"{{data: <{b.name} rows>, format: {b.format or cfg.data.format}}}" for b in sets)
        remedies.append(
            f"replay the skill: data.replay: [{entries}] (other examples of the skill than the gate's "
            f"{', '.join(b.data or b.name for b in sets)}, in its own format): with the forgetting constraint on, "
            f"replay_ratio is then searched over {flow(REMEDY_RANGES['replay_ratio'])} by default"
        )
    elif ratio == 0:
        remedies.append(
            f"use the replay data: search.space.replay_ratio {flow(REMEDY_RANGES['replay_ratio'])} ({whose} had none)"
        )
    else:
        remedies.append(f"replay more: replay_ratio up to {number(min(2 * ratio, 0.8))} ({whose} used {number(ratio)})")
    if kl == 0:
        remedies.append(
            f"distil to the base: search.space.kl_to_base {flow(REMEDY_RANGES['kl_to_base'])} ({whose} had none)"
        )
    else:
        remedies.append(f"a stronger kl_to_base: up to {number(2 * kl)} ({whose} used {number(kl)})")
    rate = float(params.get("learning_rate") or cfg.learning_rate)
    smaller = f"a lower learning rate than {whose}'s {number(rate)} (about {number(rate / 3)})"
    if cfg.model.method in ("lora", "qlora") and params.get("lora_r"):
        smaller += f" or a smaller rank than {params['lora_r']} (about {max(1, int(params['lora_r']) // 2)})"
    remedies.append(smaller)
    if not cfg.search.forgetting_constraint and not cfg.search.multi_objective:
        remedies.append("search.forgetting_constraint: true, so that trials that forget are not chosen")
    return remedies


def flow(spec: ParamSpec) -> str:
    """A range as the YAML a user would write in search.space."""
    return f"{{low: {number(spec.low)}, high: {number(spec.high)}{', log: true' if spec.log else ''}}}"


def number(value: float | None) -> str:
    """A number as the reports show it: 4 significant digits, integers whole."""
    if value is None:
        return "-"
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
