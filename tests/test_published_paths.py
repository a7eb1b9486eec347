"""Nothing a run publishes or uploads names this machine's folders: a real run published to a local registry and
listed by an `hf://` dry run is grepped, file by file, for the run's folders and the demo model's cache; the card
says how to get the base model (a Hub id, a local folder, the bundled demo)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpo_action.config import load_config, parse_config
from hpo_action.layout import RunLayout
from hpo_action.ship.card import render_card
from hpo_action.ship.publish import publish_run
from hpo_action.ship.registry._base import version_files
from hpo_action.train.demo_model import ensure_demo_model
from hpo_action.train.model_source import public_model_name

from .helpers import promoted_decision, sample_summary, signed_one_trial_config, small_config, write_config

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Published:
    root: Path
    run_dir: Path
    registry: Path
    dry_run_card: str
    dry_run_files: list[str]

    @property
    def v1(self) -> Path:
        return self.registry / "versions" / "1"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    from hpo_action.pipeline import run

    root = tmp_path_factory.mktemp("paths")
    raw = signed_one_trial_config(root, "out")
    config = write_config(root, raw)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(root / "hf-home"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        for name in list(os.environ):
            if name.startswith("GITHUB_"):
                patch.delenv(name)
        assert run(load_config(config)).decision == "promote"
        dry = publish_run(root / "out", "hf://someone/tiny-adapter", dry_run=True)
    yield Published(root, root / "out", root / "registry", dry.card, dry.files)


def _machine_folders(published: Published) -> list[str]:
    """The folders of this machine that a published file could name: the run's, the registry's, the demo cache."""
    folders = {published.root, published.run_dir, published.registry, ensure_demo_model()}
    return sorted({text for folder in folders for text in (str(folder), os.path.realpath(folder))}, key=len)


def _leaks(content: bytes, folders: list[str]) -> list[str]:
    return [folder for folder in folders if folder.encode() in content]


def test_no_published_or_uploaded_file_names_a_folder_of_this_machine(published: Published):
    folders = _machine_folders(published)
    published_files = [p for p in published.v1.rglob("*") if p.is_file()]
    assert {"adapter_config.json", "summary.json", "README.md", "predictions/test.meta.json"} <= {
        p.relative_to(published.v1).as_posix() for p in published_files
    }
    leaks = {p.relative_to(published.v1).as_posix(): _leaks(p.read_bytes(), folders) for p in published_files}
    assert not {name: found for name, found in leaks.items() if found}

    # The hf:// dry run: the card it renders, the listing, and every file it would upload.
    uploads = version_files(RunLayout(published.run_dir))
    assert set(uploads) <= set(published.dry_run_files)
    listed = {name: _leaks(path.read_bytes(), folders) for name, path in uploads.items()}
    assert not {name: found for name, found in listed.items() if found}
    assert not _leaks(published.dry_run_card.encode(), folders)
    assert not _leaks(", ".join(published.dry_run_files).encode(), folders)


def test_published_files_name_the_base_model_and_the_adapter_by_public_names(published: Published):
    adapter = json.loads((published.v1 / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "hpo-action/tiny-demo"
    summary = json.loads((published.v1 / "summary.json").read_text())
    assert summary["base_model"] == "hpo-action/tiny-demo"
    assert summary["best"]["adapter"] == "best"
    assert summary["storage"] == "sqlite:///study.db"  # relative to the output folder
    meta = json.loads((published.v1 / "predictions" / "test.meta.json").read_text())
    assert meta["model"] == "hpo-action/tiny-demo"

    card = (published.v1 / "README.md").read_text()
    assert "from a local folder" not in card
    assert "hpo-action/tiny-demo" in card and "ensure_demo_model()" in card
    assert "PeftModel.from_pretrained(base, path)" in card and 'path = "REGISTRY/versions/1"' in card
    assert 'PeftModel.from_pretrained(base, "someone/tiny-adapter")' in published.dry_run_card


def test_the_card_says_how_to_get_a_hub_or_a_local_base_model(tmp_path: Path):
    folder = tmp_path / "machine" / "my-base-7b"
    folder.mkdir(parents=True)
    cases = {
        "Qwen/Qwen2.5-0.5B": ('from_pretrained("Qwen/Qwen2.5-0.5B")', "Qwen/Qwen2.5-0.5B"),
        str(folder): ("a local folder named `my-base-7b`; supply it yourself", "my-base-7b"),
    }
    for name, (says, public) in cases.items():
        cfg = parse_config(small_config(tmp_path, model={"name": name}), base_dir=tmp_path)
        assert public_model_name(cfg.model) == public
        card = render_card(cfg, sample_summary(), promoted_decision(), [], "m", None, env={}, load_from="me/m")
        assert says in card and str(tmp_path) not in card
    credited = parse_config(
        small_config(tmp_path, model={"name": str(folder), "card_base_model": "org/base"}), base_dir=tmp_path
    )
    assert public_model_name(credited.model) == "org/base"
