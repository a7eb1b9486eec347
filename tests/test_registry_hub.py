"""HubRegistry against the real HfApi client and a loopback hub (tests/hub_server.py): CAS, tags, history, auth."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import _auth

from hpo_action.config import GateConfig, RegistryConfig
from hpo_action.errors import ConfigError, RegistryError
from hpo_action.judge.sequence import Ledger
from hpo_action.ship.registry import open_registry
from hpo_action.ship.registry._base import CARD, GATE, PARAMS, SUMMARY, TEST_PREDICTIONS, TEST_PREDICTIONS_META
from hpo_action.ship.registry.hub import LEDGER_BRANCH, HubRegistry
from hpo_action.ship.registry.ledger import finish_gate, start_gate

from .hub_server import HubServer, Repo

CANARY = "hf_CANARY1234567890"
URI = "hf://org/champ"
REPO = "org/champ"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """A loopback hub with HF_ENDPOINT and the canary HF_TOKEN pointed at it; nothing read from the real machine."""
    with HubServer(token=CANARY) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        # Read at import as if HF_ENDPOINT had been set then: the OIDC exchange and the file URLs use them.
        monkeypatch.setattr(hf_constants, "ENDPOINT", server.endpoint)
        template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # conftest sets HF_HUB_OFFLINE=1
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
        monkeypatch.setattr(hf_constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
        monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
        monkeypatch.setattr(_auth, "_OIDC_TOKEN_CACHE", None)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_TOKEN", CANARY)
        for name in ("HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HPO_ACTION_CACHE", str(tmp_path / "cache"))
        yield server


def version(root: Path, tag: str, extra: dict[str, bytes] | None = None) -> dict[str, Path]:
    """Small fake files of one version, their contents marked with `tag`."""
    contents = {
        "adapter_config.json": json.dumps({"r": 8, "tag": tag}).encode(),
        "adapter_model.safetensors": b"\x00safetensors\x01" + tag.encode(),
        PARAMS: json.dumps({"learning_rate": 1e-4, "tag": tag}).encode(),
        GATE: json.dumps({"promote": True, "decision": "promote", "tag": tag}).encode(),
        SUMMARY: json.dumps({"best_value": 0.5, "tag": tag}).encode(),
        TEST_PREDICTIONS: b'{"id": "a", "exact_match": true}\n{"id": "b", "exact_match": false}\n',
        TEST_PREDICTIONS_META: json.dumps({"data_fingerprint": f"fp-{tag}"}).encode(),
        CARD: f"---\nlibrary_name: peft\n---\n# Champion {tag}\n".encode(),
        **(extra or {}),
    }
    files = {}
    for name, data in contents.items():
        path = root / tag / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[name] = path
    return files


def main_of(hub: HubServer) -> Repo:
    return hub.state.repos[REPO]


def tree(hub: HubServer, revision: str = "main") -> dict[str, bytes]:
    commit = main_of(hub).resolve(revision)
    assert commit is not None
    return commit.files


def third_party_commit(repo: Repo) -> None:
    repo.commit("main", "someone edits the card", {**repo.commits[repo.branches["main"]].files, "NOTES.md": b"hi"})


def test_first_publish_creates_a_private_repo_and_promotes_in_one_commit(hub: HubServer, tmp_path: Path) -> None:
    registry = HubRegistry(URI)
    assert registry.read_champion() is None
    assert registry.history() == []

    published = registry.publish(version(tmp_path, "v1"), expected=None)

    repo = main_of(hub)
    assert repo.private
    main = repo.history("main")
    assert [c.message.split(" (")[0] for c in main] == ["Promote v1", "initial commit"]
    assert len(hub.state.requests("POST", "/commit/main")) == 1
    staged = [log.path for log in hub.state.requests("POST", "/branch/candidates")]
    assert len(staged) == 1  # staged on a candidates/ branch first...
    assert not [name for name in repo.branches if name.startswith("candidates/")]  # ...deleted once promoted
    assert repo.tags == {"champion-1": repo.branches["main"]}
    assert json.loads(tree(hub)["registry.json"])["version"] == 1
    assert tree(hub)["versions/1/gate.json"] == tree(hub)[GATE]
    assert published.version == 1 and published.revision == repo.branches["main"]

    champion = HubRegistry(URI).read_champion()
    assert champion is not None
    assert (champion.version, champion.revision, champion.uri) == (1, repo.branches["main"], URI)
    assert (champion.path / "adapter_model.safetensors").read_bytes() == b"\x00safetensors\x01v1"
    assert champion.params["tag"] == "v1" and json.loads((champion.path / GATE).read_text())["tag"] == "v1"
    assert champion.test_predictions is not None
    assert json.loads((champion.path / TEST_PREDICTIONS_META).read_text())["data_fingerprint"] == "fp-v1"
    assert not (champion.path / "versions").exists()  # the history is not downloaded with the champion
    assert all(r.authorized for r in hub.state.log if r.method == "POST")


def test_stale_expected_is_refused_and_main_is_unchanged(hub: HubServer, tmp_path: Path) -> None:
    registry = HubRegistry(URI)
    registry.publish(version(tmp_path, "v1"), expected=None)
    stale = registry.read_champion()
    third_party_commit(main_of(hub))
    head = main_of(hub).branches["main"]

    with pytest.raises(RegistryError, match="champion changed"):
        registry.publish(version(tmp_path, "v2"), expected=stale)

    assert main_of(hub).branches["main"] == head
    assert set(main_of(hub).tags) == {"champion-1"}


def test_racing_publishers_with_the_same_expected_promote_once(hub: HubServer, tmp_path: Path) -> None:
    HubRegistry(URI).publish(version(tmp_path, "v1"), expected=None)
    first, second = HubRegistry(URI), HubRegistry(URI)
    read_by_first, read_by_second = first.read_champion(), second.read_champion()

    won = first.publish(version(tmp_path, "v2a"), expected=read_by_first)
    with pytest.raises(RegistryError, match=r"champion changed .*expected v1, now [0-9a-f]{7}"):
        second.publish(version(tmp_path, "v2b"), expected=read_by_second)

    assert main_of(hub).branches["main"] == won.revision
    assert json.loads(tree(hub)[PARAMS])["tag"] == "v2a"


def test_main_moving_during_the_upload_is_caught_by_the_commit_parent_check(hub: HubServer, tmp_path: Path) -> None:
    registry = HubRegistry(URI)
    registry.publish(version(tmp_path, "v1"), expected=None)
    expected = registry.read_champion()

    def sneak_in(repo: Repo, branch: str) -> None:
        if branch == "main":
            hub.state.before_commit = None
            third_party_commit(repo)

    hub.state.before_commit = sneak_in
    with pytest.raises(RegistryError, match="champion changed"):
        registry.publish(version(tmp_path, "v2"), expected=expected)

    assert [r.status for r in hub.state.requests("POST", "/commit/main")][-1] == 412
    assert main_of(hub).history("main")[0].message == "someone edits the card"
    assert "champion-2" not in main_of(hub).tags
    assert hub.state.requests("POST", "/branch/candidates")  # it had staged the candidate...
    assert candidates(hub) == []  # ...and the loser deleted its staging branch, weights and all


def candidates(hub: HubServer) -> list[str]:
    return [name for name in main_of(hub).branches if name.startswith("candidates/")]


def test_a_lost_race_whose_branch_cannot_be_deleted_says_where_it_is(hub: HubServer, tmp_path: Path) -> None:
    registry = HubRegistry(URI)
    registry.publish(version(tmp_path, "v1"), expected=None)
    expected = registry.read_champion()
    hub.state.before_commit = lambda repo, branch: third_party_commit(repo) if branch == "main" else None
    hub.state.fail("DELETE", r"/branch/candidates", 500)

    with pytest.raises(RegistryError) as caught:
        registry.publish(version(tmp_path, "v2"), expected=expected)

    [left] = candidates(hub)
    message = str(caught.value)
    assert "champion changed" in message and "\n" not in message
    assert f"staging branch {left} (the candidate's files) is still on the Hub in {REPO}: delete it there" in message
    assert "HTTP 500" in message


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", r"/branch/candidates"), ("POST", r"/commit/candidates"), ("POST", r"/commit/main")],
    ids=["staging", "upload", "promotion"],
)
def test_a_publish_failing_at_any_step_leaves_no_candidates_branch(
    hub: HubServer, tmp_path: Path, method: str, path: str
) -> None:
    registry = HubRegistry(URI)
    v1 = registry.publish(version(tmp_path, "v1"), expected=None)
    hub.state.fail(method, path, 500, times=5)  # every retry too
    with pytest.raises(RegistryError, match="HTTP 500"):
        registry.publish(version(tmp_path, "v2"), expected=v1)
    assert candidates(hub) == []
    assert main_of(hub).branches["main"] == v1.revision


def test_a_slow_drip_answer_is_cut_at_the_timeout(hub: HubServer, tmp_path: Path) -> None:
    """One byte every 0.5 s never trips a per-read timeout; registry.timeout bounds the whole operation."""
    HubRegistry(URI).publish(version(tmp_path, "v1"), expected=None)
    hub.state.drip("GET", r"/revision/main$")
    started = time.monotonic()
    with pytest.raises(
        RegistryError,
        match=r"^hf://org/champ: could not read the champion at .*: no answer within "
        r"3 s \(registry\.timeout\)$",
    ):
        HubRegistry(URI, timeout=3).read_champion()
    assert time.monotonic() - started < 3 + 5
    assert hub.state.requests("GET", "/revision/main")[-1].status == 200  # it was answering, slowly


def test_a_publish_whose_promotion_drips_ends_at_the_timeout_with_nothing_published(
    hub: HubServer, tmp_path: Path
) -> None:
    registry = HubRegistry(URI)
    v1 = registry.publish(version(tmp_path, "v1"), expected=None)
    hub.state.drip("POST", r"/commit/main$")
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"could not publish .*no answer within 3 s \(registry\.timeout\)$"):
        HubRegistry(URI, timeout=3).publish(version(tmp_path, "v2"), expected=v1)
    assert time.monotonic() - started < 3 + 3 + 5  # the deadline, then at most 3 s to delete the staging branch
    assert main_of(hub).branches["main"] == v1.revision and set(main_of(hub).tags) == {"champion-1"}
    assert candidates(hub) == []
    assert HubRegistry(URI).read_champion().version == 1  # type: ignore[union-attr]


def test_second_publish_moves_the_root_keeps_the_history_and_tags(hub: HubServer, tmp_path: Path) -> None:
    registry = HubRegistry(URI)
    v1 = registry.publish(version(tmp_path, "v1", extra={"training_args.bin": b"only v1"}), expected=None)
    expected = registry.read_champion()
    assert expected is not None and expected.revision == v1.revision

    v2 = registry.publish(version(tmp_path, "v2"), expected=expected)

    repo = main_of(hub)
    assert v2.version == 2 and v2.revision == repo.branches["main"]
    assert repo.tags == {"champion-1": v1.revision, "champion-2": v2.revision}
    files = tree(hub)
    assert "training_args.bin" not in files and ".gitattributes" in files
    assert json.loads(files["versions/1/gate.json"])["tag"] == "v1"
    assert json.loads(files["versions/2/gate.json"])["tag"] == "v2"
    assert json.loads(files["registry.json"])["history"] == [1, 2]
    assert len(repo.history("main")) == 3

    champion = registry.read_champion()
    assert champion is not None and champion.version == 2 and champion.params["tag"] == "v2"
    assert not (champion.path / "training_args.bin").exists()
    history = registry.history()
    assert [(c.version, c.revision) for c in history] == [(1, v1.revision), (2, v2.revision)]
    assert [json.loads((c.path / GATE).read_text())["tag"] for c in history] == ["v1", "v2"]
    assert history[0].params["tag"] == "v1"
    assert json.loads((history[0].path / TEST_PREDICTIONS_META).read_text())["data_fingerprint"] == "fp-v1"


def test_a_failed_tag_is_a_warning_and_history_falls_back_to_main(
    hub: HubServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub.state.fail("POST", r"/tag/", 500)
    registry = HubRegistry(URI)
    with caplog.at_level(logging.WARNING, logger="hpo_action.ship.registry.hub"):
        published = registry.publish(version(tmp_path, "v1"), expected=None)

    assert main_of(hub).tags == {}
    assert "tagging it champion-1 failed: HTTP 500" in caplog.text
    assert [(c.version, c.revision) for c in registry.history()] == [(1, published.revision)]


def test_publishing_without_a_token_fails_with_the_status(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(RegistryError, match=r"hf://org/champ: .*HTTP 401"):
        HubRegistry(URI).publish(version(tmp_path, "v1"), expected=None)
    assert hub.state.log and not any(r.token_sent for r in hub.state.log)


def test_the_token_argument_wins_over_hf_token(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_wrongwrongwrong")
    HubRegistry(URI, token=CANARY).publish(version(tmp_path, "v1"), expected=None)
    assert all(r.authorized for r in hub.state.log)


def test_keyless_publishing_uses_huggingface_hubs_oidc_exchange(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_OIDC_RESOURCE", REPO)
    monkeypatch.setenv("HF_OIDC_ID_TOKEN", "eyJ.fake-ci-id-token.sig")
    published = HubRegistry(URI).publish(version(tmp_path, "v1"), expected=None)
    assert published.version == 1
    assert hub.state.exchanged == [REPO]  # exchanged once, then cached by huggingface_hub


def test_uri_must_name_a_namespace_and_a_repo() -> None:
    assert isinstance(open_registry(URI), HubRegistry)
    with pytest.raises(ConfigError, match="hf://namespace/name"):
        HubRegistry("hf://just-a-name")


def _chain(error: BaseException) -> str:
    """Every message in an exception's chain, as a CLI or a traceback could show it."""
    seen, out, current = set(), [], error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(out)


def test_the_token_never_leaks(
    hub: HubServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(hf_constants, "HF_DEBUG", True)  # huggingface_hub then logs every request as curl
    caplog.set_level(logging.DEBUG)
    registry = HubRegistry(URI)
    errors: list[BaseException] = []

    v1 = registry.publish(version(tmp_path, "v1"), expected=None)
    registry.read_champion()
    registry.history()
    for method, path, status in (
        ("POST", "/commit/main", 500),
        ("GET", "/revision/main", 500),
        ("POST", "/branch/", 401),
    ):
        hub.state.fail(method, path, status)
        with pytest.raises(RegistryError) as caught:
            registry.publish(version(tmp_path, f"fail-{status}"), expected=v1)
        assert f"HTTP {status}" in str(caught.value)
        errors.append(caught.value)
    third_party_commit(main_of(hub))
    with pytest.raises(RegistryError, match="champion changed") as caught:
        registry.publish(version(tmp_path, "stale"), expected=v1)
    errors.append(caught.value)
    monkeypatch.setenv("HF_TOKEN", "hf_CANARYwrongtoken")
    with pytest.raises(RegistryError, match="HTTP 401") as caught:
        HubRegistry(URI).publish(version(tmp_path, "bad-token"), expected=None)
    errors.append(caught.value)

    assert any(r.token_sent and r.authorized for r in hub.state.log)  # the canary really was used
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err, *(_chain(e) for e in errors)]
    assert "send_request_headers" in caplog.text  # debug logging of every request was on
    for text in texts:
        assert "CANARY" not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"CANARY" not in path.read_bytes(), path


def test_staging_branches_are_kept_on_request_and_unique_per_attempt(hub: HubServer, tmp_path: Path) -> None:
    registry = HubRegistry(URI, keep_candidates=True)
    files = version(tmp_path, "v1")
    first = registry.publish(files, expected=None)
    kept = [name for name in main_of(hub).branches if name.startswith("candidates/")]
    assert len(kept) == 1 and tree(hub, kept[0]) == tree(hub)  # the staged tree is what got promoted
    registry.publish(files, expected=first)  # the very same files again, at once: another branch name
    names = [name for name in main_of(hub).branches if name.startswith("candidates/")]
    assert len(names) == 2 and len(set(names)) == 2


def test_a_promotion_the_hub_applied_but_answered_500_is_recognized(hub: HubServer, tmp_path: Path) -> None:
    hub.state.lose_commit_answers = 1
    published = HubRegistry(URI).publish(version(tmp_path, "v1"), expected=None)
    assert published.version == 1 and published.revision == main_of(hub).branches["main"]
    assert json.loads(tree(hub)["registry.json"])["version"] == 1
    assert len([c for c in main_of(hub).history("main") if c.message.startswith("Promote")]) == 1


def test_an_unreadable_champion_is_an_error_never_no_champion(hub: HubServer, tmp_path: Path, monkeypatch) -> None:
    HubRegistry(URI).publish(version(tmp_path, "v1"), expected=None)  # private by default
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_0000")
    with pytest.raises(RegistryError, match=r"refused to show this repo \(HTTP 401\)") as info:
        HubRegistry(URI).read_champion()
    assert "hf_wrong_token_0000" not in str(info.value)


def test_registry_private_false_is_honoured(hub: HubServer, tmp_path: Path) -> None:

    open_registry(URI, RegistryConfig(uri=URI, private=False)).publish(version(tmp_path, "v1"), expected=None)
    assert main_of(hub).private is False


def test_an_endpoint_that_never_answers_fails_within_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts TCP connections (the kernel does) and never answers them
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", CANARY)
    started = time.monotonic()
    try:
        with pytest.raises(RegistryError, match=r"no answer within 2 s \(registry\.timeout\)"):
            HubRegistry(URI, timeout=2).read_champion()
    finally:
        silent.close()
    assert time.monotonic() - started < 15  # the deadline, plus at most one retry's back-off


def test_an_mlflow_server_that_drips_is_cut_at_the_timeout_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's per-request timeout restarts with every byte, like the Hub client's; the same slow endpoint."""
    pytest.importorskip("mlflow", reason="MLflow is not installed: pip install -e '.[dev]' (or '.[mlflow]')")
    with HubServer(CANARY) as slow:
        slow.state.drip("GET", r"^/api/", times=100)  # every request, MLflow's retries included
        monkeypatch.setenv("MLFLOW_TRACKING_URI", slow.endpoint)
        started = time.monotonic()
        with pytest.raises(
            RegistryError,
            match=r"^mlflow://champ: could not read the champion at http://127\.0\.0\.1:"
            r"\d+: no answer within 3 s \(registry\.timeout\)$",
        ):
            open_registry("mlflow://champ", RegistryConfig(uri="mlflow://champ", timeout=3)).read_champion()
        assert time.monotonic() - started < 3 + 5
        assert slow.state.requests("GET", "/api/")  # it was asked, and answered slowly


def test_the_gate_ledger_counts_gates_on_its_own_branch_and_never_moves_main(hub: HubServer, tmp_path: Path) -> None:
    registry = HubRegistry(URI)
    registry.publish(version(tmp_path, "v1"), expected=None)
    champion = registry.read_champion()
    cfg = GateConfig(sequence="online")
    first = start_gate(registry, cfg, REPO)
    finish_gate(registry, first, "promote")

    def another_gate_counts_first(repo: Repo, branch: str) -> None:  # a rival gate commits between read and write
        if branch == LEDGER_BRANCH:
            hub.state.before_commit = None
            rival = Ledger.from_json(json.loads(repo.resolve(LEDGER_BRANCH).files["gates.json"])).started()[0]
            repo.commit(LEDGER_BRANCH, "rival", {"gates.json": json.dumps(rival.to_json()).encode()})

    hub.state.before_commit = another_gate_counts_first
    third = start_gate(registry, cfg, REPO)

    assert (first.k, third.k) == (1, 3)  # the 412 re-read the ledger: the rival is gate 2
    assert 412 in [r.status for r in hub.state.requests("POST", f"/commit/{LEDGER_BRANCH}")]
    assert third.level == pytest.approx(0.05 * 6 / math.pi**2 / 9)  # gate 2 never reported: nothing passed on
    stored = json.loads(tree(hub, LEDGER_BRANCH)["gates.json"])
    assert [(g["k"], g["outcome"]) for g in stored["gates"]] == [(1, "promote"), (2, "started"), (3, "started")]
    assert registry.read_ledger() == stored
    assert HubRegistry("hf://org/never-gated").read_ledger() is None
    assert main_of(hub).branches["main"] == champion.revision  # the champion's compare-and-swap still holds
    assert registry.publish(version(tmp_path, "v2"), expected=champion).version == 2


def test_the_first_gate_of_a_new_registry_creates_the_repo_and_the_first_publish_follows(
    hub: HubServer, tmp_path: Path
) -> None:
    registry = HubRegistry(URI)
    started = start_gate(registry, GateConfig(sequence="alpha-spending"), REPO)
    assert (started.k, started.level) == (1, pytest.approx(0.05 * 6 / math.pi**2))
    assert main_of(hub).private
    assert registry.read_champion() is None  # counting a gate made no champion
    assert registry.publish(version(tmp_path, "v1"), expected=None).version == 1
