"""The remedies searched by default (config/remedies.py): replay_ratio and kl_to_base over derived ranges when a
config keeps a skill, gives replay rows and judges trials on forgetting, but names no range; a second warm start
with both at the top of their range; the user's own value or range always wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo_action.config import HpoConfig, parse_config
from hpo_action.config.remedies import REMEDY_RANGES, REMEDY_STARTS
from hpo_action.search.naming import study_name
from hpo_action.search.optuna_backend.study import open_study
from hpo_action.search.space import DEFAULTS, STRONG_REMEDIES, WARM_START_ATTR, searched, warm_start_params

from .helpers import small_config


def _raw(tmp_path: Path) -> dict:
    """The quickstart shrunk: the copy set kept, its replay rows given, the constraint on, no remedy named."""
    raw = small_config(tmp_path)
    raw["data"]["replay"] = ["replay_copy.jsonl"]
    raw["search"].update(forgetting_constraint=True, forgetting_probe_size=64)
    assert not {"replay_ratio", "kl_to_base"} & (set(raw["search"]["space"]) | set(raw["train"]))
    return raw


def test_unnamed_remedies_are_searched_over_the_derived_ranges(tmp_path: Path):
    cfg = parse_config(_raw(tmp_path), base_dir=tmp_path)
    space = searched(cfg)
    assert {name: space[name] for name in REMEDY_RANGES} == REMEDY_RANGES
    assert REMEDY_RANGES["replay_ratio"].low > 0 and REMEDY_RANGES["kl_to_base"].log
    warm = warm_start_params(cfg)  # train leaves them at 0 (no remedy): the measured start instead
    assert (warm["replay_ratio"], warm["kl_to_base"]) == (REMEDY_STARTS["replay_ratio"], REMEDY_STARTS["kl_to_base"])
    assert all(REMEDY_RANGES[name].low < start < REMEDY_RANGES[name].high for name, start in REMEDY_STARTS.items())
    raw = _raw(tmp_path)
    raw["train"].update(replay_ratio=0.3, kl_to_base=0.5)  # train holds the first warm start's values, searched
    cfg = parse_config(raw, base_dir=tmp_path)
    assert (warm_start_params(cfg)["replay_ratio"], warm_start_params(cfg)["kl_to_base"]) == (0.3, 0.5)
    assert {name: searched(cfg)[name] for name in REMEDY_RANGES} == REMEDY_RANGES
    assert "replay_ratio" not in cfg.search.space  # derived, not written into the user's section


@pytest.mark.parametrize(
    ("change", "searched_remedies"),
    [
        ({"space": {"replay_ratio": 0.0}}, {"kl_to_base"}),  # a fixed value in the space is the user's choice
        ({"space": {"kl_to_base": {"low": 0.5, "high": 0.6}}}, {"replay_ratio", "kl_to_base"}),  # the user's range
        ({"search": {"forgetting_constraint": False}}, set()),  # nothing would weigh them
        ({"search": {"sampler": "grid"}}, set()),  # a grid trains every point: no dimension added
        ({"model": {"method": "full"}}, {"replay_ratio"}),  # KL would keep a second copy of the model
        ({"data": {"replay": []}}, set()),  # no rows to replay
        ({"gate": {"forgetting": []}}, set()),  # no skill to keep
    ],
    ids=["fixed-value", "own-range", "no-constraint", "grid", "full", "no-replay", "no-forgetting-set"],
)
def test_a_named_value_or_range_or_a_config_that_cannot_use_them_keeps_its_own(
    tmp_path: Path, change: dict, searched_remedies: set
):
    raw = _raw(tmp_path)
    for section, values in change.items():
        if section == "space":
            raw["search"]["space"].update(values)
        else:
            raw[section].update(values)
    cfg = parse_config(raw, base_dir=tmp_path)
    assert set(searched(cfg)) & set(REMEDY_RANGES) == searched_remedies
    if "kl_to_base" in change.get("space", {}):
        assert searched(cfg)["kl_to_base"].high == 0.6


def test_a_worker_process_searches_the_same_space_in_the_same_study(tmp_path: Path):
    """A worker receives the config as JSON (every field set, supervisor.py): it must derive the same ranges."""
    cfg = parse_config(_raw(tmp_path), base_dir=tmp_path)
    worker = HpoConfig.model_validate(cfg.model_dump(mode="json"))
    assert searched(worker) == searched(cfg) and study_name(worker) == study_name(cfg)


def test_the_study_queues_the_defaults_then_the_strong_remedies(tmp_path: Path):
    cfg = parse_config(_raw(tmp_path), base_dir=tmp_path)
    study = open_study(cfg)
    first, second = study.get_trials(deepcopy=False)
    assert [t.state.name for t in (first, second)] == ["WAITING", "WAITING"]
    assert first.user_attrs[WARM_START_ATTR] == DEFAULTS and second.user_attrs[WARM_START_ATTR] == STRONG_REMEDIES
    assert first.system_attrs["fixed_params"] == warm_start_params(cfg)
    strong = {**warm_start_params(cfg), "replay_ratio": 0.5, "kl_to_base": 3.0}
    assert second.system_attrs["fixed_params"] == strong
    reopened = open_study(cfg)  # a resume queues nothing more
    assert len(reopened.get_trials(deepcopy=False)) == 2


def test_without_remedies_to_weigh_only_the_defaults_are_queued(tmp_path: Path):
    raw = _raw(tmp_path)
    raw["search"]["forgetting_constraint"] = False
    cfg = parse_config(raw, base_dir=tmp_path)
    (only,) = open_study(cfg).get_trials(deepcopy=False)
    assert only.user_attrs[WARM_START_ATTR] == DEFAULTS


def test_derived_ranges_make_another_study_than_the_same_config_without_them(tmp_path: Path):
    with_remedies = parse_config(_raw(tmp_path), base_dir=tmp_path)
    raw = _raw(tmp_path)
    raw["search"]["space"].update(replay_ratio=0.0, kl_to_base=0.0)  # the same trial defaults, nothing searched
    without = parse_config(raw, base_dir=tmp_path)
    assert study_name(with_remedies) != study_name(without)
