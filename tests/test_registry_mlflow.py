"""MlflowRegistry against a real `mlflow server` (tests/mlflow_server.py: SQLite, local artifacts, basic auth,
loopback): the alias as the champion, the gate's evidence as tags, compare-and-swap (stale reads, earlier rivals,
two racing processes), history, and credentials that never leave."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest

from hpo_action.config import GateConfig
from hpo_action.errors import ConfigError, RegistryError
from hpo_action.ship.registry import open_registry, registry_secrets
from hpo_action.ship.registry._base import CARD, GATE, PARAMS, SUMMARY, TEST_PREDICTIONS, TEST_PREDICTIONS_META
from hpo_action.ship.registry.ledger import finish_gate, start_gate
from hpo_action.ship.registry.mlflow_registry import LEDGER_TAG

from .conftest import MLFLOW_CANARY
from .helpers import promoted_decision

pytestmark = pytest.mark.usefixtures("mlflow_env")

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed: pip install -e '.[dev]' (or '.[mlflow]')")


def model_uri(alias: str | None = None) -> str:
    """A registered model of its own per test: the server lives for the whole session."""
    name = f"adapter-{uuid.uuid4().hex[:8]}"
    return f"mlflow://{name}" + (f"@{alias}" if alias else "")


def version_files(root: Path, tag: str, fingerprint: str = "fp-test") -> dict[str, Path]:
    """One version's files: fake weights marked with `tag`, a real promoting gate.json and test predictions."""
    decision = dataclasses.replace(promoted_decision(), adapter_sha256=f"sha-{tag}", test_fingerprint=fingerprint)
    meta = {"data_fingerprint": fingerprint, "metrics": ["exact_match"], "settings": {"max_new_tokens": 12}}
    contents = {
        "adapter_config.json": json.dumps({"r": 8, "tag": tag}).encode(),
        "adapter_model.safetensors": b"\x00safetensors\x01" + tag.encode(),
        PARAMS: json.dumps({"trial": 1, "params": {"learning_rate": 1e-3, "tag": tag}}).encode(),
        GATE: json.dumps(decision.to_json()).encode(),
        SUMMARY: json.dumps({"best_value": 0.5, "tag": tag}).encode(),
        TEST_PREDICTIONS: b'{"id": "a", "exact_match": true}\n{"id": "b", "exact_match": false}\n',
        TEST_PREDICTIONS_META: json.dumps(meta).encode(),
        CARD: f"# Champion {tag}\n".encode(),
        "plots/optimization_history.png": b"\x89PNG" + tag.encode(),
    }
    files = {}
    for name, data in contents.items():
        path = root / tag / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[name] = path
    return files


def client() -> Any:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_directly(name: str, tags: dict[str, str]) -> Any:
    """A version registered with MLflow's own client, past hpo-action: another publisher, another tool."""
    run = client().create_run(client().get_experiment_by_name("hpo-action").experiment_id)
    return client().create_model_version(name, source=run.info.artifact_uri, run_id=run.info.run_id, tags=tags)


def test_publish_moves_the_alias_tags_the_evidence_and_reads_back_every_file(tmp_path: Path) -> None:
    uri = model_uri()
    registry = open_registry(uri)
    name = registry.name
    assert registry.read_champion() is None and registry.history() == []
    files = version_files(tmp_path, "v1")
    assert registry.next_version(None) == 1

    first = registry.publish(files, expected=None)

    assert (first.version, first.revision, first.uri) == (1, "v1", uri)
    assert client().get_registered_model(name).aliases == {"champion": "1"}
    tags = client().get_model_version(name, "1").tags
    gate = promoted_decision()
    assert tags["hpo_action.decision"] == "promote" and tags["hpo_action.state"] == "promoted"
    assert tags["hpo_action.gated_against"] == "none" and tags["hpo_action.test_fingerprint"] == "fp-test"
    assert tags["hpo_action.test"] == gate.primary.test and tags["hpo_action.metric"] == "exact_match"
    assert float(tags["hpo_action.p_value"]) == pytest.approx(gate.primary.p_value, rel=1e-5)
    assert float(tags["hpo_action.bound"]) == pytest.approx(gate.primary.bound, rel=1e-5)
    assert tags["hpo_action.forgetting.copy"].startswith("passed: delta +0")

    champion = open_registry(uri).read_champion()  # a fresh reader downloads the version's artifacts
    assert champion is not None and (champion.version, champion.revision) == (1, "v1")
    assert champion.path != first.path or champion.path.is_dir()
    for name_in_version, source in files.items():
        assert (champion.path / name_in_version).read_bytes() == source.read_bytes(), name_in_version
    assert champion.params == {"learning_rate": 1e-3, "tag": "v1"}
    assert champion.test_predictions is not None
    assert champion.reusable_for("fp-test", ["exact_match"], [], 12)  # same test rows: stored predictions reused
    assert not champion.reusable_for("fp-other", ["exact_match"], [], 12)  # other rows: re-evaluated
    assert registry.load_adapter(champion) == champion.path

    second = registry.publish(version_files(tmp_path, "v2"), expected=champion)
    assert second.version == 2 and open_registry(uri).read_champion().version == 2
    assert [(c.version, c.params["tag"]) for c in registry.history()] == [(1, "v1"), (2, "v2")]
    assert client().get_model_version(name, "2").tags["hpo_action.gated_against"] == "v1"


def test_a_stale_read_is_refused_before_anything_is_uploaded(tmp_path: Path) -> None:
    uri = model_uri()
    registry = open_registry(uri)
    stale = registry.publish(version_files(tmp_path, "v1"), expected=None)
    registry.publish(version_files(tmp_path, "v2"), expected=stale)
    with pytest.raises(RegistryError, match=r"champion changed since the gate read it \(expected v1, now v2\)"):
        registry.publish(version_files(tmp_path, "late"), expected=stale)
    with pytest.raises(RegistryError, match=r"expected none, now v2"):
        registry.publish(version_files(tmp_path, "first?"), expected=None)
    versions = client().search_model_versions(f"name = '{registry.name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]  # the refused publications registered nothing


def test_an_earlier_rival_gated_against_the_same_champion_wins_and_a_killed_one_can_be_released(tmp_path: Path):
    """The race window the alias alone cannot close: a rival that registered its version first, against the same
    champion, and has not moved the alias yet. The later publisher refuses; once the rival is marked refused (what
    its own failure does, or a person does for a killed publisher), publishing works again."""
    uri = model_uri()
    registry = open_registry(uri)
    v1 = registry.publish(version_files(tmp_path, "v1"), expected=None)
    rival = register_directly(registry.name, {"hpo_action.state": "pending", "hpo_action.gated_against": "v1"})

    with pytest.raises(RegistryError, match=rf"champion changed .*version {rival.version}, gated against it too"):
        registry.publish(version_files(tmp_path, "late"), expected=v1)
    assert client().get_registered_model(registry.name).aliases == {"champion": "1"}
    refused = client().get_model_version(registry.name, str(int(rival.version) + 1)).tags
    assert refused["hpo_action.state"] == "refused" and "champion changed" in refused["hpo_action.refused"]

    client().set_model_version_tag(registry.name, rival.version, "hpo_action.state", "refused")
    after = registry.publish(version_files(tmp_path, "after"), expected=v1)
    assert after.version == int(rival.version) + 2
    assert [c.version for c in registry.history()] == [1, after.version]  # refused versions are no champions


def test_a_version_registered_after_the_card_was_written_is_refused(tmp_path: Path) -> None:
    registry = open_registry(model_uri())
    v1 = registry.publish(version_files(tmp_path, "v1"), expected=None)
    assert registry.next_version(v1) == 2  # what the card names
    register_directly(registry.name, {"by": "someone else"})
    with pytest.raises(RegistryError, match="registered this publication as version 3, not 2 as its model card says"):
        registry.publish(version_files(tmp_path, "v2"), expected=v1)
    assert open_registry(registry.uri).read_champion().version == 1


def _race(uri: str, root: Path, tag: str, barrier: Any, results: Any) -> None:
    registry = open_registry(uri)
    expected = registry.read_champion()
    files = version_files(root, tag)
    barrier.wait()
    try:
        results.put((tag, registry.publish(files, expected).version))
    except RegistryError as error:
        results.put((tag, str(error)))


def test_two_racing_processes_never_both_become_champion(tmp_path: Path) -> None:
    """Two publishers in their own processes, both gated against v1, released at once: exactly one moves the alias;
    the other is refused (champion changed) and its version, if it registered one, is marked refused."""
    uri = model_uri()
    registry = open_registry(uri)
    registry.publish(version_files(tmp_path, "v1"), expected=None)
    context = multiprocessing.get_context("spawn")  # fresh clients: no connection pool shared across a fork
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_race, args=(uri, tmp_path, tag, barrier, results)) for tag in ("x", "y")]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=600) for _ in workers)
    for worker in workers:
        worker.join(60)
    won = {tag: version for tag, version in outcomes.items() if isinstance(version, int)}
    lost = {tag: message for tag, message in outcomes.items() if isinstance(message, str)}
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert "champion changed since the gate read it" in next(iter(lost.values()))
    (winner,) = won.values()
    assert client().get_registered_model(registry.name).aliases == {"champion": str(winner)}
    versions = {int(v.version): v.tags for v in client().search_model_versions(f"name = '{registry.name}'")}
    promoted = [n for n, tags in versions.items() if tags.get("hpo_action.state") == "promoted"]
    assert sorted(promoted) == [1, winner]
    assert versions[winner]["hpo_action.gated_against"] == "v1"
    assert all(tags["hpo_action.state"] == "refused" for n, tags in versions.items() if n not in (1, winner))
    assert [c.version for c in registry.history()] == [1, winner]


def test_the_alias_name_comes_from_the_uri_and_bad_uris_are_config_errors(tmp_path: Path, monkeypatch) -> None:
    uri = model_uri(alias="production")
    registry = open_registry(uri)
    registry.publish(version_files(tmp_path, "v1"), expected=None)
    assert client().get_registered_model(registry.name).aliases == {"production": "1"}
    assert open_registry(uri.replace("@production", "")).read_champion() is None  # @champion is another alias
    for bad in ("mlflow://", "mlflow://a/b", "mlflow://name@latest", "mlflow://name@v2", "mlflow://name@a b"):
        with pytest.raises(ConfigError, match="registry"):
            open_registry(bad)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ConfigError, match="set MLFLOW_TRACKING_URI"):
        open_registry(uri)


def test_the_card_says_how_to_download_and_links_the_version_page(mlflow_env: Any) -> None:
    registry = open_registry("mlflow://quickstart-adapter")
    page = f"{mlflow_env.url}/#/models/quickstart-adapter/versions/3"
    assert registry.fetch_code(3).splitlines() == [
        "import mlflow",
        "",
        f"# {page} (MLFLOW_TRACKING_URI: that server)",
        'path = mlflow.artifacts.download_artifacts("models:/quickstart-adapter/3")',
    ]
    assert registry.load_reference(3) == "models:/quickstart-adapter/3"


def _chain(error: BaseException) -> str:
    """Every message an exception can show: str, repr, its chain and the traceback `--debug` prints."""
    out = ["".join(traceback.format_exception(error))]
    current: BaseException | None = error
    while current is not None:
        out += [str(current), repr(current)]
        current = current.__cause__
    return "\n".join(out)


def test_credentials_never_leak(
    tmp_path: Path,
    mlflow_env: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The canary password as MLFLOW_TRACKING_PASSWORD and inside the tracking URI, with every logger at DEBUG:
    publishing, reading, refusals, a wrong password and an unreachable server show it nowhere."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HPO_ACTION_CACHE", str(tmp_path / "cache"))
    host = mlflow_env.url.removeprefix("http://")
    errors: list[BaseException] = []

    registry = open_registry(model_uri())
    v1 = registry.publish(version_files(tmp_path, "v1"), expected=None)  # with MLFLOW_TRACKING_PASSWORD
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{MLFLOW_CANARY}@{host}")  # the password in the URI
    in_uri = open_registry(registry.uri)
    assert (
        in_uri.read_champion().version == 1 and in_uri.url(v1) == f"http://{host}/#/models/{registry.name}/versions/1"
    )
    assert MLFLOW_CANARY not in in_uri.fetch_code(1)
    in_uri.history()
    with pytest.raises(RegistryError, match="champion changed") as caught:
        in_uri.publish(version_files(tmp_path, "stale"), expected=None)
    errors.append(caught.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{MLFLOW_CANARY}wrong@{host}")
    with pytest.raises(RegistryError, match=r"could not read the champion at http://admin:\*\*\*@.*401") as caught:
        open_registry(registry.uri).read_champion()
    errors.append(caught.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{MLFLOW_CANARY}@127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(RegistryError, match=r"could not publish at http://admin:\*\*\*@127\.0\.0\.1:9") as caught:
        open_registry(registry.uri).publish(version_files(tmp_path, "down"), expected=v1)
    errors.append(caught.value)

    captured = capsys.readouterr()
    assert "api/2.0/mlflow" in caplog.text  # the requests really were logged
    for text in (caplog.text, captured.out, captured.err, *(_chain(e) for e in errors)):
        assert MLFLOW_CANARY not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert MLFLOW_CANARY.encode() not in path.read_bytes(), path


def test_the_cli_masks_mlflow_credentials_before_printing(mlflow_env: Any, monkeypatch, capsys) -> None:
    from hpo_action.cli import main

    host = mlflow_env.url.removeprefix("http://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{MLFLOW_CANARY}@{host}")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-" + MLFLOW_CANARY)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert MLFLOW_CANARY in registry_secrets(dict(os.environ))
    main(["champion", "--registry", model_uri(), "--json"])
    lines = capsys.readouterr().out.splitlines()
    masks = [line for line in lines if line.startswith("::add-mask::")]
    assert lines[: len(masks)] == masks  # every mask before anything else
    assert {f"::add-mask::{MLFLOW_CANARY}", f"::add-mask::tok-{MLFLOW_CANARY}"} <= set(masks)
    assert lines[len(masks) :] == ["null"]  # no champion in a new registered model


@pytest.mark.slow
def test_the_quickstart_publishes_through_the_action_and_reloads_from_the_mlflow_artifacts(
    tmp_path: Path, mlflow_env: Any
) -> None:
    """Done when of issue 26: the quickstart (shrunk to a promoting two-trial study) run by action.yml with
    `registry: mlflow://quickstart-adapter` and the password in MLFLOW_TRACKING_PASSWORD publishes version 1; the
    step's outputs and summary link the version's page; the artifacts, downloaded with MLflow's client as the card
    says, load with `PeftModel.from_pretrained` and reproduce the stored test predictions; and a later run's gate would
    reuse those predictions (same test rows) instead of re-evaluating."""
    import torch
    from peft import PeftModel

    from hpo_action.config import parse_config
    from hpo_action.data.loading import load_splits, rows_fingerprint
    from hpo_action.judge.evaluate import EvalSettings, score_rows
    from hpo_action.judge.predictions import read_predictions
    from hpo_action.train.models import load_base_model

    from .helpers import small_config, write_config
    from .test_action import run_action

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    raw = small_config(
        workspace,
        search={
            "n_trials": 2,
            "seed": 0,
            "pruner": "none",
            "budget": {"max_steps": 40, "eval_every": 20},
            "space": {"learning_rate": {"low": 5e-3, "high": 9e-3, "log": True}},
        },
        evaluate={"metrics": ["loss", "exact_match"]},
        gate={"forgetting": []},
    )
    write_config(workspace, raw)
    inputs = {"config": "hpo.yaml", "output": "runs", "registry": "mlflow://quickstart-adapter"}
    result = run_action(workspace, inputs, {"HPO_ACTION_SKIP_INSTALL": "1"})
    log = result["logs"][-1] if result["logs"] else ""
    assert result["returncode"] == 0, log[-4000:]
    outputs = result["outputs"]
    page = f"{mlflow_env.url}/#/models/quickstart-adapter/versions/1"
    assert (outputs["decision"], outputs["champion-version"], outputs["model-url"]) == ("promote", "1", page)
    assert page in result["summary"]  # the job summary links the model version
    lines = log.splitlines()
    assert lines[0] == f"::add-mask::{MLFLOW_CANARY}"
    visible = "\n".join(line for line in lines if not line.startswith("::add-mask::"))
    for text in (visible, result["summary"], result["output_files"], *outputs.values()):
        assert MLFLOW_CANARY not in text

    downloaded = Path(
        mlflow.artifacts.download_artifacts("models:/quickstart-adapter/1", dst_path=str(tmp_path / "dl"))
    )
    card = (downloaded / "README.md").read_text()
    assert 'path = mlflow.artifacts.download_artifacts("models:/quickstart-adapter/1")' in card
    assert page in card and "PeftModel.from_pretrained(base, path)" in card
    cfg = parse_config(raw, base_dir=workspace)
    base = load_base_model(cfg.model)
    model = PeftModel.from_pretrained(base.model, str(downloaded))
    rows = [json.loads(line) for line in (workspace / "test.jsonl").read_text().splitlines()]
    with torch.no_grad():
        records = score_rows(model, base.tokenizer, rows, cfg.data, EvalSettings.from_config(cfg.evaluate))
    assert {r["id"]: r for r in records} == read_predictions(downloaded / "predictions" / "test.jsonl")

    champion = open_registry("mlflow://quickstart-adapter").read_champion()
    assert champion is not None and champion.version == 1
    fingerprint = rows_fingerprint(load_splits(cfg.data).test or [])
    settings = cfg.evaluate
    assert champion.reusable_for(fingerprint, settings.metrics, settings.normalize, settings.max_new_tokens)
    tags = client().get_model_version("quickstart-adapter", "1").tags
    assert tags["hpo_action.test_fingerprint"] == fingerprint and tags["hpo_action.decision"] == "promote"


def test_the_gate_ledger_is_compare_and_set_a_rival_revision_wins_and_this_gate_counts_after_it(tmp_path: Path):
    """Issue 21: a rival gate counts itself between this gate's read of the ledger and its write. The write is the
    creation of the next revision, which the rival took: this gate reads the rival's revision and counts after it,
    so neither update is lost and the two gates get different numbers."""
    registry = open_registry(model_uri())
    cfg = GateConfig(sequence="online")
    first = start_gate(registry, cfg, registry.name)
    finish_gate(registry, first, "promote")
    real_create = registry._client.create_registered_model
    rival_levels = []

    def rival_counts_first(name: str, *args: Any, **kwargs: Any) -> Any:
        if not rival_levels:  # the rival, with its own client, counts a whole gate before our write lands
            rival_levels.append(start_gate(open_registry(registry.uri), cfg, registry.name))
        return real_create(name, *args, **kwargs)

    registry._client.create_registered_model = rival_counts_first
    second = start_gate(registry, cfg, registry.name)
    assert (first.k, rival_levels[0].k, second.k) == (1, 2, 3)
    assert second.spent_before > rival_levels[0].spent_before  # the rival's level is spent before this gate's
    stored = registry.read_ledger()
    assert [(g["k"], g["outcome"]) for g in stored["gates"]] == [(1, "promote"), (2, "started"), (3, "started")]
    assert json.loads(client().get_registered_model(registry.name).tags[LEDGER_TAG]) == stored  # the copy for people
    assert open_registry(registry.uri).read_ledger() == stored
    assert open_registry(model_uri()).read_ledger() is None  # a model that never counted a gate
    assert registry.read_champion() is None  # counting gates moved no alias


def _count_gates(uri: str, gates: int, barrier: Any, results: Any) -> None:
    registry, cfg = open_registry(uri), GateConfig(sequence="online")
    barrier.wait()
    try:
        levels = [start_gate(registry, cfg, registry.name) for _ in range(gates)]
        results.put([(level.k, level.spent_before) for level in levels])
    except Exception:  # the parent shows the worker's failure
        results.put(traceback.format_exc())


def test_two_processes_counting_gates_at_once_lose_no_update(tmp_path: Path) -> None:
    """Two gates in their own processes count 6 gates each against one registered model, released at once: the
    ledger ends with all 12, numbered 1-12 once each, and no two gates were handed the same spent budget (with the
    read-write-read-back ledger of before, overlapping writes lost entries)."""
    registry = open_registry(model_uri())
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_count_gates, args=(registry.uri, 6, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(60)
    assert all(isinstance(o, list) for o in outcomes), outcomes
    counted = sorted(k for outcome in outcomes for k, _ in outcome)
    assert counted == list(range(1, 13)), outcomes
    assert len({spent for outcome in outcomes for _, spent in outcome}) == 12
    assert [g["k"] for g in registry.read_ledger()["gates"]] == list(range(1, 13))
