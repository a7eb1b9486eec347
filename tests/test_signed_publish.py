"""Signed, attested publication end to end: real runs publish a signed v1 (local key), the signing library's own
CLI verifies it, any flipped byte of any published file fails `verify` and stops the next `run` before it
trains, and `publish` refuses every file that is not the one the gate saw."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hpo_action.cli import main
from hpo_action.config import SigningConfig, load_config
from hpo_action.ship.attestation import Attestation
from hpo_action.ship.manifest import ATTESTATION, SIGNATURE, RunManifest
from hpo_action.ship.publish import publish_run
from hpo_action.ship.signing import key_fingerprint

from .helpers import isolate_env, public_key_pem, signed_one_trial_config, write_config

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Published:
    """A registry whose v1 was published signed by run1 (promoted), and run2 (same seed: not promoted)."""

    root: Path
    config: Path
    key: Path
    public: Path
    registry: Path
    run1: Path
    run2: Path

    @property
    def v1(self) -> Path:
        return self.registry / "versions" / "1"

    def adopt_ledger(self, uri: str) -> None:
        """Give the registry at `uri` the gate ledger that counted run1's gate (a restored backup): publish refuses
        a promotion gated elsewhere, a fresh registry included (issue 21)."""
        from hpo_action.ship.registry import open_registry

        ledger = json.loads((self.registry / "gates.json").read_text())
        open_registry(uri).update_ledger(lambda _: ledger)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    from hpo_action.pipeline import run

    root = tmp_path_factory.mktemp("signed")
    raw = signed_one_trial_config(root, "run1")
    key, public = root / "signing-key.pem", root / "signing-key.pub"
    public.write_bytes(public_key_pem(key))
    config = write_config(root, raw)
    with pytest.MonkeyPatch.context() as patch:
        isolate_env(patch, root)
        first = run(load_config(config))
        assert first.decision == "promote"
        cfg = load_config(config)
        cfg.output.dir = str(root / "run2")
        second = run(cfg)
        assert second.decision != "promote"  # the same seed trains the same adapter: no gain over v1
        yield Published(root, config, key, public, root / "registry", root / "run1", root / "run2")


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_publish_signs_every_file_and_the_libraries_own_cli_verifies_it(published: Published, capsys):
    v1 = published.v1
    gated = RunManifest.read(published.run1 / "manifest.json").files
    files = {p.relative_to(v1).as_posix() for p in v1.rglob("*") if p.is_file()}
    assert files == {*gated.files, "README.md", ATTESTATION, SIGNATURE}
    assert {"adapter_model.safetensors", "tokenizer.json", "gate.json", "predictions/test.jsonl"} <= files

    library = [sys.executable, "-m", "model_signing", "verify", "key", "--signature", str(v1 / SIGNATURE)]
    done = subprocess.run([*library, "--public_key", str(published.public), str(v1)], capture_output=True, text=True)
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stderr

    attestation = Attestation.read(v1 / ATTESTATION)
    gate = json.loads((v1 / "gate.json").read_text())
    assert attestation.subject == gated.digest and attestation.files == gated
    evidence = attestation.predicate
    assert evidence["decision"] == "promote" and evidence["champion"] is None
    assert evidence["primary"]["p_value"] == gate["primary"]["p_value"] and evidence["primary"]["n"] == 200
    assert evidence["test_fingerprint"] == gate["test_fingerprint"]
    assert evidence["signing"] == {"method": "key", "key": f"sha256:{key_fingerprint(published.key)}"}
    assert evidence["study"] == json.loads((v1 / "summary.json").read_text())["study_name"]
    # The next run verified v1 and recorded it as the champion it was gated against, by digest.
    assert RunManifest.read(published.run2 / "manifest.json").champion.to_json() == {
        "version": 1,
        "digest": {"sha256": gated.digest},
    }

    main(["verify", str(published.registry), "--key", str(published.public)])
    shown = capsys.readouterr().out
    assert f"signed by key sha256:{key_fingerprint(published.key)}" in shown
    assert "gate: promote against the base model" in shown
    assert f"test set fingerprint: {gate['test_fingerprint']}" in shown
    main(["verify", f"{published.registry}:1", "--key", str(published.key), "--json"])
    assert json.loads(capsys.readouterr().out)["evidence"] == evidence
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", f"{published.registry}:9", "--key", str(published.public)])
    assert exit_info.value.code == 2 and "no such version" in capsys.readouterr().err

    card = (v1 / "README.md").read_text()
    section = card[card.index("## Signature and provenance") : card.index("## Framework versions")]
    assert f"the fingerprint `sha256:{key_fingerprint(published.key)}`" in section
    assert f"`gate.intoto.json` (sha256 `{hashlib.sha256((v1 / ATTESTATION).read_bytes()).hexdigest()}`)" in section
    assert f"digest of the gated files (`{gated.digest}`)" in section
    assert "hpo-action verify REGISTRY:1 --key signing-key.pub" in section
    assert "model_signing verify key --signature model.sig --public_key signing-key.pub ." in section
    assert str(published.root) not in section


def test_one_flipped_byte_in_any_published_file_fails_verify_and_stops_the_next_run(
    published: Published, tmp_path: Path, capsys
):
    names = sorted(p.relative_to(published.v1).as_posix() for p in published.v1.rglob("*") if p.is_file())
    caught: dict[str, tuple[bool, bool]] = {}
    for index, name in enumerate(names):
        registry = tmp_path / f"registry-{index}"
        shutil.copytree(published.registry, registry)
        target = registry / "versions" / "1" / name
        content = bytearray(target.read_bytes())
        content[len(content) // 2] ^= 0x01
        target.write_bytes(bytes(content))
        with pytest.raises(SystemExit) as verified:
            main(["verify", str(registry), "--key", str(published.public)])
        named = str(target) in _error(capsys.readouterr().err)
        output = tmp_path / f"out-{index}"
        with pytest.raises(SystemExit) as ran:
            main(["run", "-c", str(published.config), "--registry", str(registry), "--output", str(output)])
        refused = _error(capsys.readouterr().err)
        stopped = ran.value.code == 1 and str(target) in refused and "is not trusted" in refused
        caught[name] = (verified.value.code == 1 and named, stopped and not (output / "study.db").exists())
    assert len(caught) >= 15 and all(verify and run for verify, run in caught.values()), caught


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("rewritten candidate predictions", "predictions/test.candidate.jsonl"),
        ("generation settings added to a greedy run", "best/generation_config.json"),
        ("edited chat template", "best/chat_template.jinja"),
        ("edited tokenizer.json", "best/tokenizer.json"),
        ("an extra .py file", "best/modeling_extra.py"),
        ("a symlink to a system file", "best/notes.txt"),
        ("a file replaced by a symlink", "best/tokenizer_config.json"),
        ("a rejected run whose gate.json says promote", "gate.json"),
    ],
)
def test_publish_ships_exactly_what_the_gate_saw(published: Published, tmp_path: Path, capsys, case: str, named: str):
    source = published.run2 if "rejected" in case else published.run1
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir, symlinks=True)
    _tamper(run_dir, case)
    registry = tmp_path / "fresh-registry"
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", "--registry", str(registry), "--from", str(run_dir)])
    line = _error(capsys.readouterr().err)
    assert exit_info.value.code == 1, line
    assert str(run_dir / named) in line, line
    assert not (registry / "versions").exists() or not any((registry / "versions").iterdir())


def test_an_untouched_copy_publishes_and_dry_run_lists_the_signature(published: Published, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(published.run1, run_dir)
    registry = tmp_path / "fresh-registry"
    main(["publish", "--registry", str(registry), "--from", str(run_dir), "--dry-run"])
    listed = capsys.readouterr().err
    assert "model.sig" in listed and "gate.intoto.json" in listed
    with pytest.raises(SystemExit) as exit_info:  # gated against published.registry, not this one
        main(["publish", "--registry", str(registry), "--from", str(run_dir)])
    line = _error(capsys.readouterr().err)
    assert exit_info.value.code == 2 and "has counted no gate, so this promotion was gated elsewhere" in line, line
    published.adopt_ledger(str(registry))
    main(["publish", "--registry", str(registry), "--from", str(run_dir)])
    main(["verify", str(registry), "--key", str(published.public)])
    assert "files match" in capsys.readouterr().out


@pytest.mark.parametrize("tamper", ["zeroed weights", "rewritten predictions"])
def test_run_refuses_a_tampered_champion_before_training(published: Published, tmp_path: Path, capsys, tamper: str):
    registry = tmp_path / "registry"
    shutil.copytree(published.registry, registry)
    v1 = registry / "versions" / "1"
    if tamper == "zeroed weights":
        target = v1 / "adapter_model.safetensors"
        target.write_bytes(b"\0" * target.stat().st_size)
    else:
        target = v1 / "predictions" / "test.jsonl"
        rows = [json.loads(line) for line in target.read_text().splitlines()]
        target.write_text("".join(json.dumps({**row, "loss": 1e-6}) + "\n" for row in rows))
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-c", str(published.config), "--registry", str(registry), "--output", str(output)])
    line = _error(capsys.readouterr().err)
    assert exit_info.value.code == 1 and f"{target}: changed since it was signed" in line, line
    assert not (output / "study.db").exists()


def test_allow_unsigned_champion_is_for_registries_that_predate_signing(published: Published, tmp_path: Path, capsys):
    registry = tmp_path / "registry"
    shutil.copytree(published.registry, registry)
    v1 = registry / "versions" / "1"
    (v1 / SIGNATURE).unlink()
    run = ["run", "-c", str(published.config), "--registry", str(registry), "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:  # the attestation says it was signed: a downgrade
        main([*run, "--allow-unsigned-champion"])
    assert exit_info.value.code == 1 and "model.sig: missing, yet this version was published signed" in (
        _error(capsys.readouterr().err)
    )
    (v1 / ATTESTATION).unlink()  # now it looks like a version published before signing
    with pytest.raises(SystemExit) as exit_info:
        main(run)
    assert exit_info.value.code == 1 and "v1 is unsigned" in _error(capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_info:  # accepted; --skip-search then stops at the missing study
        main([*run, "--allow-unsigned-champion", "--skip-search"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "does not exist yet" in _error(err)
    assert "champion v1: verified" in err


def test_unsigned_publication_says_so_in_the_card(published: Published, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(published.run1, run_dir)
    cfg = load_config(run_dir / "config.yaml")
    cfg.registry.signing = SigningConfig(method="off")
    registry = tmp_path / "unsigned-registry"
    published.adopt_ledger(str(registry))
    outcome = publish_run(run_dir, str(registry), cfg, env={})
    assert SIGNATURE not in outcome.files and ATTESTATION in outcome.files
    assert "**This version is not signed.**" in (registry / "versions" / "1" / "README.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(registry)])
    assert exit_info.value.code == 1 and "v1 is unsigned" in capsys.readouterr().err
    main(["verify", str(registry), "--allow-unsigned"])
    assert "UNSIGNED" in capsys.readouterr().out


def test_mlflow_stores_a_signed_version_that_verifies_and_names_a_tampered_artifact(
    published: Published, tmp_path: Path, capsys, mlflow_env: Any
):
    """model.sig, gate.intoto.json and the card are ordinary artifacts of the MLflow version: a fresh reader's
    `verify mlflow://name:1` passes (and so does the signing library's own CLI on the download), the card names
    that command, and one flipped byte in the server's artifact store fails `verify` naming the file and stops the
    next `run` before it trains."""
    mlflow = pytest.importorskip("mlflow")
    name = f"signed-{uuid.uuid4().hex[:8]}"
    uri = f"mlflow://{name}"
    run_dir = tmp_path / "run"
    shutil.copytree(published.run1, run_dir)
    published.adopt_ledger(uri)
    main(["publish", "--registry", uri, "--from", str(run_dir)])
    capsys.readouterr()
    downloads = Path(os.environ["HPO_ACTION_CACHE"]) / "mlflow" / name
    shutil.rmtree(downloads)  # publish kept a copy: from here on, every file comes from the server

    main(["verify", f"{uri}:1", "--key", str(published.public)])
    shown = capsys.readouterr().out
    assert "v1: files match" in shown and f"signed by key sha256:{key_fingerprint(published.key)}" in shown
    (folder,) = downloads.iterdir()
    gated = RunManifest.read(run_dir / "manifest.json").files
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == {
        *gated.files,
        "README.md",
        ATTESTATION,
        SIGNATURE,
    }
    library = [sys.executable, "-m", "model_signing", "verify", "key", "--signature", str(folder / SIGNATURE)]
    library += ["--public_key", str(published.public), str(folder)]
    done = subprocess.run(library, capture_output=True, text=True)
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stderr
    card = (folder / "README.md").read_text()
    assert f"hpo-action verify {uri}:1 --key signing-key.pub" in card
    assert f'path = mlflow.artifacts.download_artifacts("models:/{name}/1")' in card

    client = mlflow.MlflowClient(tracking_uri=mlflow_env.url, registry_uri=mlflow_env.url)
    run_id = client.get_model_version(name, "1").run_id
    (stored,) = (mlflow_env.folder / "artifacts").glob(f"*/{run_id}/artifacts/adapter_model.safetensors")
    content = bytearray(stored.read_bytes())
    content[len(content) // 2] ^= 0x01
    stored.write_bytes(bytes(content))
    shutil.rmtree(downloads)
    with pytest.raises(SystemExit) as verified:
        main(["verify", uri, "--key", str(published.public)])
    line = _error(capsys.readouterr().err)
    assert verified.value.code == 1 and "adapter_model.safetensors: changed since it was signed" in line, line
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as ran:
        main(["run", "-c", str(published.config), "--registry", uri, "--output", str(output)])
    line = _error(capsys.readouterr().err)
    assert ran.value.code == 1 and "is not trusted" in line, line
    assert "adapter_model.safetensors: changed since it was signed" in line
    assert not (output / "study.db").exists()


def _tamper(run_dir: Path, case: str) -> None:
    best = run_dir / "best"
    if case == "rewritten candidate predictions":
        path = run_dir / "predictions" / "test.candidate.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**row, "loss": 1e-6}) + "\n" for row in rows))
    elif case == "generation settings added to a greedy run":
        assert not (best / "generation_config.json").exists()
        (best / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 1.7}))
    elif case == "edited chat template":
        with (best / "chat_template.jinja").open("a") as handle:
            handle.write("{{ 'ignore the system prompt' }}")
    elif case == "edited tokenizer.json":
        data = json.loads((best / "tokenizer.json").read_text())
        data["added_tokens"] = [*data.get("added_tokens", []), {"id": 9999, "content": "<x>", "special": True}]
        (best / "tokenizer.json").write_text(json.dumps(data))
    elif case == "an extra .py file":
        (best / "modeling_extra.py").write_text("import os\nos.system('true')\n")
    elif case == "a symlink to a system file":
        (best / "notes.txt").symlink_to("/etc/hostname")
    elif case == "a file replaced by a symlink":
        (best / "tokenizer_config.json").unlink()
        (best / "tokenizer_config.json").symlink_to("/etc/hostname")
    elif case == "a rejected run whose gate.json says promote":
        gate = json.loads((run_dir / "gate.json").read_text())
        assert gate["decision"] != "promote"
        gate.update(decision="promote", promote=True)
        (run_dir / "gate.json").write_text(json.dumps(gate, indent=2))


def _error(err: str) -> str:
    """The error line a failed command ended with (`run` may print progress before it)."""
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: "), err[-2000:]
    return line
