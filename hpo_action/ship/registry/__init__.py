"""Where champions live: a pointer that moves atomically (compare-and-swap), a history, and per version the
weights, the model card, the gate result and the test predictions.

`open_registry(uri)` picks the implementation by the URI's scheme: a plain path (or file://) is a local folder,
`hf://namespace/name` the Hugging Face Hub, `mlflow://<registered model name>[@alias]` the MLflow Model Registry;
`register_scheme` adds another, with the environment's secrets its client reads (`registry_secrets` gathers them, so
the CLI masks and scrubs them). An unknown scheme is a config error.
"""

from __future__ import annotations

from collections.abc import Callable

from hpo_action.config import RegistryConfig
from hpo_action.errors import ConfigError

from ._base import Champion, Registry, champion_changed
from .local import LocalRegistry
from .mlflow_registry import secret_values as mlflow_secrets

__all__ = [
    "Champion",
    "LocalRegistry",
    "Registry",
    "champion_changed",
    "oidc_resource",
    "open_registry",
    "register_scheme",
    "registry_files",
    "registry_secrets",
    "scheme_of",
]

Factory = Callable[[str, RegistryConfig], Registry]
Secrets = Callable[[dict[str, str]], list[str]]


def _hub(uri: str, settings: RegistryConfig) -> Registry:
    from .hub import HubRegistry  # huggingface_hub loads only for a Hub registry

    return HubRegistry(
        uri, private=settings.private, timeout=settings.timeout, keep_candidates=settings.keep_candidates
    )


def _mlflow(uri: str, settings: RegistryConfig) -> Registry:
    from .mlflow_registry import MlflowRegistry  # the MLflow client loads only for an MLflow registry

    return MlflowRegistry(uri, timeout=settings.timeout)


_FACTORIES: dict[str, Factory] = {"hf": _hub, "mlflow": _mlflow}
_SECRETS: dict[str, Secrets] = {"mlflow": mlflow_secrets}


def register_scheme(scheme: str, factory: Factory, secrets: Secrets | None = None) -> None:
    """Make `scheme://...` URIs open with `factory(uri, registry settings)`; `secrets(env)` lists the credentials
    its client takes from the environment."""
    _FACTORIES[scheme] = factory
    if secrets is not None:
        _SECRETS[scheme] = secrets


def registry_secrets(env: dict[str, str]) -> list[str]:
    """Every credential a registry client would read from `env`, whichever registry a run uses: to mask them in a
    GitHub Actions log and scrub them from every message."""
    return [secret for secrets in _SECRETS.values() for secret in secrets(env)]


def scheme_of(uri: str) -> str | None:
    """The URI's scheme, or None for a local folder (a plain path or file://)."""
    scheme, sep, _ = uri.partition("://")
    return None if not sep or scheme == "file" else scheme


def open_registry(uri: str, settings: RegistryConfig | None = None) -> Registry:
    scheme = scheme_of(uri)
    if scheme is None:
        return LocalRegistry(uri.removeprefix("file://"))
    if scheme not in _FACTORIES:
        known = ", ".join(f"{name}://" for name in sorted(_FACTORIES))
        raise ConfigError(f"registry.uri: unknown scheme {scheme!r} in {uri!r}; use a folder path or {known}")
    return _FACTORIES[scheme](uri, settings or RegistryConfig())


def registry_files(registry: Registry) -> tuple[str, ...]:
    """Top-level names in a version's folder that belong to the registry, not the version (a Hub snapshot's
    registry.json and download metadata): left out when a version's files are verified."""
    return tuple(getattr(registry, "own_files", ()))


def oidc_resource(env: dict[str, str], uri: str | None) -> str | None:
    """For keyless trusted publishing in GitHub Actions: the Hub repo a token should be scoped to, else None."""
    if not uri or scheme_of(uri) != "hf":
        return None
    from .hub import oidc_resource as hub_resource

    return hub_resource(env, uri)
