"""The search stage: the configured backend runs (or resumes) the study, and its typed summary becomes the run's
files (trials.csv, summary.json, config.yaml), whichever backend ran it. Its one hand-off is the SearchResult."""

from __future__ import annotations

from pathlib import Path

import yaml

from hpo_action.config import HpoConfig
from hpo_action.files import write_text_atomic
from hpo_action.interrupts import raise_if_pressed
from hpo_action.layout import RunLayout
from hpo_action.redaction import redact_url
from hpo_action.search.backend import SearchRequest, SearchResult, backend_for
from hpo_action.search.outputs import write_trials_csv
from hpo_action.search.summary import RunSummary


def search_stage(request: SearchRequest) -> SearchResult:
    """Run the study behind search.backend and write what it found; an interrupt stops here, files unwritten."""
    result = backend_for(request.cfg).search(request)
    raise_if_pressed()
    write_search_files(request.cfg, result.summary, RunLayout(Path(request.cfg.output.dir)))
    return result


def write_search_files(cfg: HpoConfig, summary: RunSummary, layout: RunLayout) -> None:
    """trials.csv, summary.json and config.yaml (the resolved config, its storage URL redacted)."""
    write_trials_csv(list(summary.trials), layout.trials_csv)
    summary.write(layout.summary)
    resolved = cfg.model_dump()
    resolved["search"]["storage"] = redact_url(cfg.search.storage) if cfg.search.storage else None
    write_text_atomic(layout.run_config, yaml.safe_dump(resolved, sort_keys=False))
