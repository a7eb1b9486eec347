"""Signatures, manifests and attestations on their own (no training): model-signing signs and verifies real
folders with locally generated keys, every flipped byte of a signature is refused, the file that changed is
named, and the gate's statement is a valid in-toto statement. No network."""

from __future__ import annotations

import base64
import datetime
import json
import shutil
from pathlib import Path

import pytest

from hpo_action.config import SigningConfig
from hpo_action.errors import ConfigError, VerificationError
from hpo_action.ship.attestation import Attestation, gate_statement
from hpo_action.ship.manifest import ATTESTATION, SIGNATURE, ChampionRef, Manifest, hash_folder
from hpo_action.ship.registry.hub import HubRegistry
from hpo_action.ship.signing import (
    SigningPlan,
    Trust,
    key_fingerprint,
    keyless_signer,
    sign_folder,
    signing_plan,
    trust_from,
    workflow_identity,
)
from hpo_action.ship.verify import check_folder, parse_target, verify_version

from .helpers import make_signing_key, promoted_decision, public_key_pem
from .hub_server import HubServer
from .test_registry_hub import REPO, URI, hub  # noqa: F401 - the loopback hub fixture

ACTIONS = {
    "GITHUB_ACTIONS": "true",
    "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.example/x",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_WORKFLOW_REF": "acme/tune/.github/workflows/hpo.yml@refs/heads/main",
    "GITHUB_REPOSITORY": "acme/tune",
    "GITHUB_SHA": "a" * 40,
    "GITHUB_RUN_ID": "7",
}


def _version(folder: Path, key: Path | None, config: bytes = b'{"r": 8}\n') -> Path:
    """A small version: weights, a config, predictions, gate.json, a card and the gate's attestation; signed with
    `key` unless it is None."""
    files = {
        "adapter_model.safetensors": bytes(range(256)) * 8,
        "adapter_config.json": config,
        "predictions/test.jsonl": b'{"id": "a", "loss": 0.5}\n{"id": "b", "loss": 0.25}\n',
        "gate.json": json.dumps(promoted_decision().to_json()).encode(),
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    plan = SigningPlan("key", key=key) if key else SigningPlan("off")
    gated = hash_folder(folder)
    statement = gate_statement("t v1", gated, promoted_decision(), None, "study-x", plan.to_json(), ACTIONS)
    (folder / ATTESTATION).write_text(json.dumps(statement, indent=2))
    (folder / "README.md").write_text("# card\n")
    sign_folder(folder, plan)
    return folder


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return make_signing_key(tmp_path / "signing-key.pem")


def test_the_manifest_digest_is_model_signings_own_root_digest(tmp_path: Path, key: Path):
    folder = _version(tmp_path / "v1", key)
    bundle = json.loads((folder / SIGNATURE).read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert payload["subject"][0]["digest"]["sha256"] == hash_folder(folder, [SIGNATURE]).digest
    resources = {r["name"]: r["digest"] for r in payload["predicate"]["resources"]}
    assert resources == hash_folder(folder, [SIGNATURE]).files


def test_a_signed_version_verifies_and_names_its_signer(tmp_path: Path, key: Path):
    folder = _version(tmp_path / "v1", key)
    checked = check_folder(folder, Trust(key=key), 1)
    assert checked.signer is not None and checked.signer.identity == f"key sha256:{key_fingerprint(key)}"
    assert checked.attestation is not None and checked.attestation.predicate["decision"] == "promote"
    assert checked.digest == hash_folder(folder, [SIGNATURE, ATTESTATION, "README.md"]).digest
    public = tmp_path / "signing-key.pub"
    public.write_bytes(public_key_pem(key))
    assert check_folder(folder, Trust(key=public), 1).signer == checked.signer  # the public half alone suffices


def test_every_single_byte_change_to_the_signature_is_refused(tmp_path: Path, key: Path):
    """One bit flipped at each position in turn (the smallest change, which keeps the JSON and base64 mostly
    well-formed), including the bytes the DSSE signature does not cover: layout, base64 padding bits, the key hint."""
    folder = _version(tmp_path / "v1", key)
    original = (folder / SIGNATURE).read_bytes()
    passed = []
    for position in range(len(original)):
        flipped = bytearray(original)
        flipped[position] ^= 0x01
        (folder / SIGNATURE).write_bytes(bytes(flipped))
        try:
            check_folder(folder, Trust(key=key), 1)
            passed.append(position)
        except VerificationError as err:
            assert str(err).startswith(str(folder / SIGNATURE)), (position, str(err))
    assert passed == [], f"{len(passed)} of {len(original)} flipped bytes went unnoticed"


def test_a_changed_an_added_and_a_missing_file_are_named(tmp_path: Path, key: Path):
    folder = _version(tmp_path / "v1", key)
    for change, name, what in (
        (
            lambda f: (f / "predictions/test.jsonl").write_text('{"id": "a", "loss": 1e-6}\n'),
            "predictions/test.jsonl",
            "changed",
        ),
        (lambda f: (f / "extra.py").write_text("import os\n"), "extra.py", "was added"),
        (lambda f: (f / "adapter_config.json").unlink(), "adapter_config.json", "is missing"),
        (lambda f: (f / "README.md").write_text("# a better card\n"), "README.md", "changed"),
    ):
        copy = tmp_path / f"copy-{name.replace('/', '-')}"
        shutil.copytree(folder, copy)
        change(copy)
        with pytest.raises(VerificationError) as caught:
            check_folder(copy, Trust(key=key), 1)
        assert str(caught.value).startswith(f"{copy / name}: {what}"), str(caught.value)


def test_a_symlink_in_a_version_is_refused(tmp_path: Path, key: Path):
    folder = _version(tmp_path / "v1", key)
    (folder / "notes.txt").symlink_to("/etc/hostname")
    with pytest.raises(VerificationError, match=r"notes.txt: a symlink"):
        check_folder(folder, Trust(key=key), 1)


def test_another_key_or_none_is_refused(tmp_path: Path, key: Path):
    folder = _version(tmp_path / "v1", key)
    other = make_signing_key(tmp_path / "other.pem")
    with pytest.raises(
        VerificationError, match=r"model.sig: the signature does not verify: it was made with another key"
    ):
        check_folder(folder, Trust(key=other), 1)
    with pytest.raises(ConfigError, match=f"signed with key sha256:{key_fingerprint(key)}; pass --key"):
        check_folder(folder, Trust(), 1)


def test_unsigned_versions_pass_only_when_allowed_and_a_deleted_signature_never(tmp_path: Path, key: Path):
    unsigned = _version(tmp_path / "unsigned", None)
    with pytest.raises(VerificationError, match="v1 is unsigned"):
        check_folder(unsigned, Trust(key=key), 1)
    checked = check_folder(unsigned, Trust(), 1, allow_unsigned=True)
    assert checked.signer is None and "UNSIGNED" in "\n".join(checked.describe())
    (unsigned / "gate.json").write_text("{}")  # the attestation still names the gated files
    with pytest.raises(VerificationError, match=r"gate.json: changed since the gate judged it"):
        check_folder(unsigned, Trust(), 1, allow_unsigned=True)

    signed = _version(tmp_path / "signed", key)
    (signed / SIGNATURE).unlink()  # a downgrade: the attestation says it was signed
    with pytest.raises(VerificationError, match=r"model.sig: missing, yet this version was published signed"):
        check_folder(signed, Trust(), 1, allow_unsigned=True)


def test_the_gate_statement_is_a_valid_in_toto_statement_about_the_manifest(tmp_path: Path):
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    manifest = Manifest({"adapter_model.safetensors": "ab" * 32, "gate.json": "cd" * 32})
    champion = ChampionRef(3, "ef" * 32)
    data = gate_statement("me/adapter v4", manifest, promoted_decision(), champion, "hpo-1", {"method": "key"}, ACTIONS)
    Statement.copy_from_pb(json_format.ParseDict(data, statement_pb2.Statement())).validate()
    assert data["subject"] == [{"name": "me/adapter v4", "digest": {"sha256": manifest.digest}}]
    evidence = data["predicate"]
    assert evidence["decision"] == "promote" and evidence["primary"]["test"] == promoted_decision().primary.test
    assert evidence["primary"]["n"] == 200 and evidence["forgetting"][0]["name"] == "copy"
    assert evidence["champion"] == {"version": 3, "digest": {"sha256": "ef" * 32}}
    assert evidence["source"]["commit"] == "a" * 40 and evidence["study"] == "hpo-1"
    assert evidence["producer"]["name"] == "hpo-action" and evidence["producer"]["version"]
    path = tmp_path / ATTESTATION
    path.write_text(json.dumps(data))
    assert Attestation.read(path).files == manifest
    data["subject"][0]["digest"]["sha256"] = "00" * 32
    path.write_text(json.dumps(data))
    with pytest.raises(VerificationError, match="its subject is not the digest of the files it lists"):
        Attestation.read(path).check(manifest, tmp_path, path)


def test_signing_resolves_keyless_in_actions_a_key_elsewhere_else_off(tmp_path: Path, key: Path):
    plan = signing_plan(SigningConfig(), ACTIONS)
    assert plan.method == "sigstore"
    assert plan.identity == "https://github.com/acme/tune/.github/workflows/hpo.yml@refs/heads/main"
    assert workflow_identity(ACTIONS) == plan.identity
    assert trust_from(SigningConfig(), ACTIONS).identity == plan.identity  # `run` trusts this workflow's champions
    assert signing_plan(SigningConfig(key=str(key)), {}) == SigningPlan("key", key=key)
    assert signing_plan(SigningConfig(), {}).method == "off"
    assert signing_plan(SigningConfig(method="off", key=str(key)), ACTIONS).method == "off"
    with pytest.raises(ValueError, match=r"registry.signing.key: method key signs with a PEM private key"):
        SigningConfig(method="key")
    with pytest.raises(ConfigError, match="does not exist"):
        signing_plan(SigningConfig(method="key", key=str(tmp_path / "nowhere.pem")), {})
    (tmp_path / "not-a-key.pem").write_text("hello\n")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        signing_plan(SigningConfig(method="key", key=str(tmp_path / "not-a-key.pem")), {})


def test_the_keyless_signer_comes_from_the_fulcio_certificate():
    """A certificate shaped like Fulcio's for a GitHub Actions job (subject URI, issuer, build signer, repo and
    commit extensions as DER UTF8Strings) and a log entry's time: the fields `verify` prints."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def utf8(text: str) -> bytes:
        return bytes([0x0C, len(text)]) + text.encode()

    identity = "https://github.com/acme/tune/.github/workflows/hpo.yml@refs/heads/main"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(minutes=10))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
    )
    for oid, value in (
        ("1.3.6.1.4.1.57264.1.8", "https://token.actions.githubusercontent.com"),
        ("1.3.6.1.4.1.57264.1.9", identity),
        ("1.3.6.1.4.1.57264.1.12", "https://github.com/acme/tune"),
        ("1.3.6.1.4.1.57264.1.13", "a" * 40),
    ):
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), utf8(value)), False)
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    bundle = {
        "verificationMaterial": {
            "certificate": {"rawBytes": base64.b64encode(der).decode()},
            "tlogEntries": [{"integratedTime": "1700000000"}],
        }
    }
    signer = keyless_signer(bundle)
    assert signer.method == "sigstore" and signer.identity == identity and signer.workflow == identity
    assert signer.issuer == "https://token.actions.githubusercontent.com"
    assert signer.repository == "https://github.com/acme/tune" and signer.commit == "a" * 40
    assert signer.signed_at == "2023-11-14T22:13:20+00:00"
    with pytest.raises(ConfigError, match=f"signed keylessly by {identity}"):
        from hpo_action.ship.signing import verify_signature

        verify_signature(Path("."), bundle, Trust(), Manifest({}))


def test_registry_and_version_are_parsed_from_one_argument():
    assert parse_target("./registry") == ("./registry", None)
    assert parse_target("./registry:3") == ("./registry", 3)
    assert parse_target("hf://me/adapter") == ("hf://me/adapter", None)
    assert parse_target("hf://me/adapter:12") == ("hf://me/adapter", 12)


def test_a_signed_version_on_the_hub_verifies_now_and_after_the_next_promotion(
    hub: HubServer,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    key: Path,
):
    """The signature and attestation travel as ordinary version files; a Hub snapshot's own files (registry.json,
    .gitattributes, download metadata) are not the version's. A later commit that changes a file is caught."""
    registry = HubRegistry(URI)
    first = _version(tmp_path / "v1", key)
    registry.publish({p.relative_to(first).as_posix(): p for p in first.rglob("*") if p.is_file()}, None)
    assert verify_version(URI, None, Trust(key=key)).version == 1
    second = _version(tmp_path / "v2", key, config=b'{"r": 16}\n')
    registry.publish(
        {p.relative_to(second).as_posix(): p for p in second.rglob("*") if p.is_file()}, registry.read_champion()
    )
    assert verify_version(URI, None, Trust(key=key)).version == 2
    assert verify_version(URI, 1, Trust(key=key)).version == 1  # the snapshot at its champion-1 tag

    repo = hub.state.repos[REPO]
    files = dict(repo.commits[repo.branches["main"]].files)
    files["predictions/test.jsonl"] = b'{"id": "a", "loss": 0.0}\n'
    repo.commit("main", "someone rewrites the stored predictions", files)
    with pytest.raises(VerificationError, match=r"predictions/test.jsonl: changed since it was signed"):
        verify_version(URI, None, Trust(key=key))
