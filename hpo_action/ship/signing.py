"""Signatures over a version's files with OpenSSF model-signing (the `signing` extra): a Sigstore bundle whose
in-toto payload lists the sha256 of every file, made keylessly with the GitHub Actions job's OIDC identity or with
a local EC key.

Two checks go beyond the library's own `verify`: `model.sig` must be exactly what its content serializes to (a
byte the DSSE signature does not cover, such as base64 padding or JSON whitespace, cannot be changed unnoticed),
and the file that differs is named from the signed manifest before the signature itself is checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from hpo_action.config import GITHUB_ISSUER, SigningConfig
from hpo_action.errors import ConfigError, VerificationError
from hpo_action.ship.manifest import SIGNATURE, Manifest

INSTALL = "install the signing extra: pip install 'hpo-action[signing]'"
# Fulcio's certificate extensions (github.com/sigstore/fulcio/blob/main/docs/oid-info.md), DER UTF8String values.
_BUILD_SIGNER_URI = "1.3.6.1.4.1.57264.1.9"
_SOURCE_REPOSITORY_URI = "1.3.6.1.4.1.57264.1.12"
_SOURCE_REPOSITORY_DIGEST = "1.3.6.1.4.1.57264.1.13"
_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"


@dataclass(frozen=True)
class SigningPlan:
    """How `publish` signs: keyless (Sigstore, the job's OIDC identity), with a local key, or not at all."""

    method: Literal["sigstore", "key", "off"]
    key: Path | None = None
    identity: str | None = None  # keyless in GitHub Actions: the workflow the certificate will name

    def to_json(self) -> dict[str, Any]:
        """What the attestation records about the signature (so a deleted model.sig is noticed)."""
        data: dict[str, Any] = {"method": self.method}
        if self.key is not None:
            data["key"] = f"sha256:{key_fingerprint(self.key)}"
        if self.identity:
            data["identity"] = self.identity
        return data


@dataclass(frozen=True)
class Trust:
    """What a signature must match to be trusted: a public key, or a keyless identity and its OIDC issuer."""

    key: Path | None = None  # a PEM public key, or the private key whose public half is meant
    identity: str | None = None
    issuer: str = GITHUB_ISSUER


@dataclass(frozen=True)
class Signer:
    """Who signed a verified version, as its bundle says."""

    method: Literal["key", "sigstore"]
    identity: str  # "key sha256:<fingerprint>" or the certificate's subject (a workflow URI, an e-mail)
    issuer: str | None = None
    workflow: str | None = None  # keyless in GitHub Actions: the workflow file at its ref
    repository: str | None = None
    commit: str | None = None
    signed_at: str | None = None  # keyless: the transparency log's time; a key signature carries none

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if value is not None}


def workflow_identity(env: Mapping[str, str]) -> str | None:
    """The identity Sigstore's certificate names for this GitHub Actions job: the workflow file at its ref."""
    ref = env.get("GITHUB_WORKFLOW_REF")
    return f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{ref}" if ref else None


def signing_plan(settings: SigningConfig, env: Mapping[str, str]) -> SigningPlan:
    """Resolve `registry.signing` (auto: keyless where the job can mint an OIDC token, else the key, else off)."""
    method = settings.method
    keyless_here = env.get("GITHUB_ACTIONS") == "true" and bool(env.get("ACTIONS_ID_TOKEN_REQUEST_URL"))
    if method == "auto":
        method = "sigstore" if keyless_here else ("key" if settings.key else "off")
    if method == "off":
        return SigningPlan("off")
    _require_library(f"registry.signing.method {method}")
    if method == "key":
        key = Path(str(settings.key))
        if not key.is_file():
            raise ConfigError(f"registry.signing.key: {key} does not exist; point it at a PEM EC private key")
        _load_private_key(key)
        return SigningPlan("key", key=key)
    return SigningPlan("sigstore", identity=settings.identity or workflow_identity(env))


def trust_from(settings: SigningConfig, env: Mapping[str, str]) -> Trust:
    """What `run` accepts as the champion's signer: the configured key, else the configured (or this workflow's)
    keyless identity."""
    key = Path(settings.key) if settings.key else None
    return Trust(key=key, identity=settings.identity or workflow_identity(env), issuer=settings.issuer)


def sign_folder(folder: Path, plan: SigningPlan) -> Path | None:
    """Write folder/model.sig over every other file in `folder`; None when the plan is unsigned."""
    if plan.method == "off":
        return None
    import model_signing

    signature = folder / SIGNATURE
    config = model_signing.signing.Config().set_hashing_config(_hashing())
    if plan.method == "key":
        config = config.use_elliptic_key_signer(private_key=str(plan.key))
    else:
        config = config.use_sigstore_signer(use_ambient_credentials=True)
    config.sign(folder, signature)
    signature.write_text(_canonical(signature.read_text(encoding="utf-8")), encoding="utf-8")
    return signature


def read_signature(path: Path) -> dict[str, Any]:
    """The bundle in model.sig, refused unless the file is exactly its content's own serialization."""
    try:
        text = path.read_text(encoding="utf-8")
        bundle = json.loads(text)
        canonical = _canonical(text)
    except Exception as err:  # malformed in any way: the library's own parsers raise many kinds
        raise VerificationError(
            f"{path}: not a Sigstore bundle ({type(err).__name__}); the signature was altered"
        ) from None
    if canonical != text:
        raise VerificationError(f"{path}: altered (it is not the bundle its own content serializes to)")
    _check_base64(bundle, path)
    return bundle


def signed_manifest(bundle: dict[str, Any], path: Path) -> Manifest:
    """The files and digests the bundle's in-toto payload lists (not yet authenticated: the caller verifies)."""
    try:
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True))
        resources = statement["predicate"]["resources"]
        files = {str(r["name"]): str(r["digest"]) for r in resources if r["algorithm"] == "sha256"}
    except (KeyError, TypeError, ValueError) as err:
        raise VerificationError(f"{path}: its payload lists no files ({type(err).__name__}); it was altered") from None
    if len(files) != len(resources):
        raise VerificationError(f"{path}: lists files hashed with something other than sha256")
    return Manifest(files)


def verify_signature(
    folder: Path, bundle: dict[str, Any], trust: Trust, actual: Manifest, ignore: Collection[str] = ()
) -> Signer:
    """Check the signature over `folder` with model-signing (key or keyless identity); who signed, when. When the
    signature is authentic but the files are not the ones it lists, the first such file (from `actual`) is named."""
    _require_library("verifying a signature")
    import model_signing

    signature = folder / SIGNATURE
    material = bundle.get("verificationMaterial") or {}
    keyless = "publicKey" not in material
    hashing = _hashing(ignore)
    try:
        if keyless:
            signer = keyless_signer(bundle)
            if not trust.identity:
                raise ConfigError(
                    f"{signature}: signed keylessly by {signer.identity} ({signer.issuer}); to trust that signer, "
                    "pass --identity (or set registry.signing.identity) to it"
                )
            config = model_signing.verifying.Config().use_sigstore_verifier(
                identity=trust.identity, oidc_issuer=trust.issuer
            )
            config.set_hashing_config(hashing).verify(folder, signature)
            return signer
        signer = Signer("key", f"key sha256:{material['publicKey'].get('hint')}")
        if trust.key is None:
            raise ConfigError(
                f"{signature}: signed with {signer.identity}; pass --key PUBLIC_KEY.pem (or set registry.signing.key)"
            )
        with _public_key_file(trust.key) as public:
            config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public)
            config.set_hashing_config(hashing).verify(folder, signature)
        return signer
    except (ConfigError, VerificationError):
        raise
    except Exception as err:  # the library raises ValueError, sigstore's VerificationError, cryptography's...
        # model-signing compares the files only after the signature verified, and says so with this prefix.
        if isinstance(err, ValueError) and str(err).startswith("Signature mismatch"):
            problem = signed_manifest(bundle, signature).first_difference(actual.without([SIGNATURE]))
            if problem is not None:
                name, what = problem
                raise VerificationError(f"{folder / name}: {what} since it was signed (model.sig)") from None
        raise VerificationError(f"{signature}: the signature does not verify: {_reason(err, trust)}") from None


def keyless_signer(bundle: dict[str, Any]) -> Signer:
    """The signer a keyless bundle's Fulcio certificate names (subject, issuer, GitHub workflow, repo, commit)."""
    from cryptography import x509

    material = bundle.get("verificationMaterial") or {}
    raw = (material.get("certificate") or {}).get("rawBytes")
    if raw is None:  # older bundles carry a chain whose first certificate is the signer's
        raw = ((material.get("x509CertificateChain") or {}).get("certificates") or [{}])[0].get("rawBytes")
    if raw is None:
        raise VerificationError("model.sig: a keyless bundle without a certificate")
    certificate = x509.load_der_x509_certificate(base64.b64decode(raw))
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        subject = next(iter(names.get_values_for_type(x509.UniformResourceIdentifier)), None) or next(
            iter(names.get_values_for_type(x509.RFC822Name)), "unknown"
        )
    except x509.ExtensionNotFound:
        subject = "unknown"
    entries = material.get("tlogEntries") or []
    integrated = entries[0].get("integratedTime") if entries else None
    return Signer(
        "sigstore",
        subject,
        issuer=_extension(certificate, _ISSUER_V2),
        workflow=_extension(certificate, _BUILD_SIGNER_URI),
        repository=_extension(certificate, _SOURCE_REPOSITORY_URI),
        commit=_extension(certificate, _SOURCE_REPOSITORY_DIGEST),
        signed_at=datetime.fromtimestamp(int(integrated), timezone.utc).isoformat() if integrated else None,
    )


def key_fingerprint(key: Path) -> str:
    """sha256 of the PEM public key: the hint model-signing writes into a key bundle."""
    return hashlib.sha256(_public_pem(key)).hexdigest()


def _hashing(ignore: Collection[str] = ()) -> Any:
    """One hashing setup for signing and verifying: sha256 per file, no symlinks, the signature (and a registry's
    own files) left out."""
    import model_signing

    config = model_signing.hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
    return config.set_ignored_paths(paths=[SIGNATURE, *ignore])


def _canonical(text: str) -> str:
    """The bundle as the Sigstore bundle model serializes it (what model-signing itself writes)."""
    from sigstore_models.bundle.v1 import Bundle

    return Bundle.from_dict(json.loads(text)).to_json()


def _check_base64(bundle: dict[str, Any], path: Path) -> None:
    """The signed payload and the signatures in their one canonical base64 form (padding bits included)."""
    envelope = bundle.get("dsseEnvelope") or {}
    values = [envelope.get("payload"), *(s.get("sig") for s in envelope.get("signatures") or [])]
    for value in values:
        try:
            canonical = isinstance(value, str) and base64.b64encode(base64.b64decode(value, validate=True)).decode()
        except ValueError:
            canonical = False
        if canonical != value:
            raise VerificationError(f"{path}: altered (its payload or signature is not canonical base64)")


def _extension(certificate: Any, oid: str) -> str | None:
    from cryptography import x509

    try:
        value = certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value
    except x509.ExtensionNotFound:
        return None
    # DER UTF8String: tag 0x0c, a length (short or long form), the text.
    length_bytes = value[1] & 0x7F if value[1] & 0x80 else 0
    return value[2 + length_bytes :].decode("utf-8", "replace")


def _public_pem(key: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data = key.read_bytes()
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError:
        public = _load_private_key(key).public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_private_key(key: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"registry.signing.key: {key} is not an unencrypted PEM private key ({err}); make one with "
            "`openssl ecparam -name prime256v1 -genkey -noout -out signing-key.pem`"
        ) from None


@contextmanager
def _public_key_file(key: Path) -> Iterator[str]:
    """The public half of a key (public or private PEM) in a temporary file, for model-signing's verifier."""
    if not key.is_file():
        raise ConfigError(f"--key: {key} does not exist")
    with tempfile.NamedTemporaryFile(suffix=".pub") as handle:
        handle.write(_public_pem(key))
        handle.flush()
        yield handle.name


def _reason(err: BaseException, trust: Trust) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "Key mismatch" in text and trust.key is not None:
        return f"it was made with another key than {trust.key.name} (sha256:{key_fingerprint(trust.key)[:12]})"
    return text[:300]


def _require_library(purpose: str) -> None:
    try:
        import model_signing  # noqa: F401
    except ImportError:
        raise ConfigError(f"{purpose} needs OpenSSF model-signing: {INSTALL}") from None
