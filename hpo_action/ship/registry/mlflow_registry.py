"""The MLflow Model Registry: `mlflow://<registered model name>[@<alias>]`, the champion an alias (`@champion`).

The tracking server is MLFLOW_TRACKING_URI (required); credentials are MLflow's own (MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN, or a user and password in the URI). Nothing here prints them: errors
name the registry, the server without its password and the server's answer, with every secret value replaced.

A version is every file of the publication logged as the artifacts of one run (experiment MLFLOW_EXPERIMENT_NAME,
else `hpo-action`) and registered as a model version of that run's artifact root, so
`mlflow.artifacts.download_artifacts("models:/<name>/<n>")` is a folder `PeftModel.from_pretrained` loads. The gate's
evidence (decision, test, p, bound, test fingerprint, each forgetting set) is on the version as `hpo_action.*` tags.

Compare-and-swap, as far as MLflow allows. MLflow has no conditional alias update, but it numbers versions
atomically and stores a version's tags in the same transaction. A publication
1. reads the alias and refuses at once when it is not the champion the gate read (nothing is uploaded);
2. uploads the files to a new run and registers them as version p, tagged `hpo_action.state=pending` and
   `hpo_action.gated_against=v<k>` (k: the champion the gate read; `none` before the first);
3. refuses when p is not the number its model card names (another version was registered meanwhile);
4. refuses when a lower-numbered version gated against the same champion is still pending (it registered first);
5. re-reads the alias, refuses when it moved, then moves it to p and tags p `promoted`.
A refused version stays, tagged `refused` with the reason (MLflow never reuses a number). So of several hpo-action
publishers racing from one champion, only the first to register can move the alias, whatever the timing, and every
move is made by a version gated against the champion it replaces. What MLflow leaves open: an alias moved by someone
else (the UI, another tool) between step 5's read and its write is overwritten; and a publisher killed between steps
2 and 5 leaves a pending version that makes later publications against that same champion refuse, naming it, until
its `hpo_action.state` tag is set to `refused`.

The gate ledger (`gate.sequence`) is a chain of revisions, each a registered model of its own named
`<model>.gates.r<k>` whose `hpo_action.gates` tag holds the whole ledger (JSON). MLflow creates a registered model
and its tags in one transaction and refuses a name that exists, so creating revision k+1 is a compare-and-set on
revision k: of two gates that read the same ledger, exactly one creates the next revision, and the other reads
again and counts itself after it (no update is lost, and no two gates get the same number or the same spent
budget). The model's own `hpo_action.gates` tag is a copy for people, written after each revision and never read
back, and `hpo_action.gates_revision` is a hint where to start looking for the newest revision.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hpo_action.errors import ConfigError, GateError, RegistryError
from hpo_action.judge.decision import GateDecision
from hpo_action.redaction import redact_text, redact_url, url_secrets

from ._base import GATE, PARAMS, Champion, champion_changed
from ._deadline import DeadlineExceeded, within
from ._deadline import passed as deadline_passed
from .ledger import Change

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)
T = TypeVar("T")

SCHEME = "mlflow"
DEFAULT_ALIAS = "champion"
EXPERIMENT = "hpo-action"
STATE = "hpo_action.state"  # pending → promoted | refused
GATED_AGAINST = "hpo_action.gated_against"  # v<k>, or none
REFUSED = "hpo_action.refused"  # why a version was not promoted
LEDGER_TAG = "hpo_action.gates"  # the gate ledger (gate.sequence): on each revision, copied to the registered model
REVISION_TAG = "hpo_action.gates_revision"  # on the registered model: the newest ledger revision it has seen (a hint)
_LEDGER_TRIES = 20
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# MLflow's own rules for aliases: word characters and dashes; 'latest' and 'v<number>' are reserved.
_ALIAS = re.compile(r"^[\w-]+$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.I)
# The client quiet: no telemetry, no progress bars, and no "View run at <tracking URI>" line (it may hold a password).
_QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def parse_uri(uri: str) -> tuple[str, str]:
    """(registered model name, alias) of `mlflow://name[@alias]`; a config error names what is wrong."""
    scheme, _, rest = uri.partition("://")
    name, at, alias = rest.rpartition("@") if "@" in rest else (rest, "", DEFAULT_ALIAS)
    if scheme != SCHEME or not name.strip() or any(c in name for c in "/:'"):
        raise ConfigError(
            f"registry {uri!r}: expected {SCHEME}://<registered model name>[@alias] (a name without '/', ':' or "
            "quotes; the tracking server comes from MLFLOW_TRACKING_URI)"
        )
    if at and (not _ALIAS.match(alias) or _RESERVED_ALIAS.match(alias)):
        raise ConfigError(
            f"registry {uri!r}: alias {alias!r} is not one MLflow allows (letters, digits, '_' and '-'; "
            "not 'latest' or 'v<number>')"
        )
    return name, alias


def secret_values(env: dict[str, str]) -> list[str]:
    """The MLflow credentials in `env` (passwords, tokens, the tracking URI's password): to mask and scrub."""
    return [env[name] for name in SECRET_VARIABLES if env.get(name)] + url_secrets(env.get("MLFLOW_TRACKING_URI", ""))


class MlflowRegistry:
    """Champions in the MLflow Model Registry; the module docstring describes the layout and the promotion protocol."""

    def __init__(self, uri: str, timeout: float = 60.0) -> None:
        self.uri, self.timeout = uri, timeout
        self.model_name, self.alias = parse_uri(uri)
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        if not self.tracking_uri:
            raise ConfigError(
                f"registry {uri}: set MLFLOW_TRACKING_URI to the MLflow tracking server "
                "(e.g. https://mlflow.example.com), and its credentials in MLFLOW_TRACKING_USERNAME/PASSWORD"
            )
        self._client = _client(uri, self.tracking_uri, timeout)
        self._promised: dict[str | None, int] = {}  # expected champion's revision → the number the card names

    @property
    def name(self) -> str:
        return self.model_name

    @property
    def title(self) -> str:
        return self.model_name

    def url(self, champion: Champion) -> str:
        return self._version_page(champion.version)

    def load_reference(self, version: int) -> str:
        return f"models:/{self.model_name}/{version}"

    def fetch_code(self, version: int) -> str:
        """The card's download step: MLflow's client fetches the version's artifacts into a local folder."""
        page = self._version_page(version)
        where = f"# {page} (MLFLOW_TRACKING_URI: that server)" if "://" in page else "# MLFLOW_TRACKING_URI: the server"
        uri = json.dumps(self.load_reference(version), ensure_ascii=False)
        return f"import mlflow\n\n{where}\npath = mlflow.artifacts.download_artifacts({uri})"

    def load_adapter(self, champion: Champion) -> Path:
        """The champion's artifacts, downloaded when it was read."""
        return champion.path

    def read_champion(self) -> Champion | None:
        """The version the alias points at, its artifacts downloaded; None when there is no model or no alias."""
        return self._bounded("read the champion", self._read_champion)

    def _read_champion(self) -> Champion | None:
        target = self._alias_target()
        return None if target is None else self._champion(self._client.get_model_version(self.model_name, target))

    def history(self) -> list[Champion]:
        """Every promoted version (and the alias's, should its tag be missing), oldest first, downloaded."""
        return self._bounded("read the history", self._history)

    def _history(self) -> list[Champion]:
        target = self._alias_target()
        promoted = [v for v in self._versions() if v.tags.get(STATE) == "promoted" or int(v.version) == target]
        return [self._champion(v) for v in sorted(promoted, key=lambda v: int(v.version))]

    def next_version(self, expected: Champion | None) -> int:
        """One past the highest version; publish() then refuses any other number, so the card is never wrong."""
        versions = self._bounded("read the versions", self._versions)
        upcoming = max((int(v.version) for v in versions), default=0) + 1
        self._promised[expected.revision if expected else None] = upcoming
        return upcoming

    def publish(self, files: dict[str, Path], expected: Champion | None) -> Champion:
        promised = self._promised.pop(expected.revision if expected else None, None)
        return self._bounded("publish", lambda: self._publish(files, expected, promised))

    def _publish(self, files: dict[str, Path], expected: Champion | None, promised: int | None) -> Champion:
        self._check_alias(expected)  # before uploading anything
        self._ensure_model()
        if deadline_passed():  # the caller stopped waiting: nothing is uploaded behind its back
            raise DeadlineExceeded(f"no answer within {self.timeout:g} s")
        run = self._upload(files)
        version = self._register(files, run, expected)
        try:
            if deadline_passed():  # the caller stopped waiting during the upload: no alias moves behind its back
                raise DeadlineExceeded(f"no answer within {self.timeout:g} s")
            self._promote(int(version.version), expected, promised)
        except BaseException as error:
            if not self._applied(int(version.version)):
                self._refuse(version, error)
                raise
            logger.warning("%s: MLflow answered an error but moved the alias to v%s", self.uri, version.version)
        self._finish(version)
        return self._champion(version, self._keep_copy(files, version))

    def _promote(self, version: int, expected: Champion | None, promised: int | None) -> None:
        """Steps 3-5 of the module docstring: the promised number, no earlier rival, the alias unchanged; then move."""
        if promised is not None and version != promised:
            raise RegistryError(
                f"{self.uri}: MLflow registered this publication as version {version}, not {promised} as its model "
                "card says: another version was registered meanwhile; publish again"
            )
        gated = _revision(expected)
        rivals = sorted(
            int(v.version)
            for v in self._versions()
            if int(v.version) < version and v.tags.get(GATED_AGAINST) == gated and v.tags.get(STATE) == "pending"
        )
        if rivals:
            raise RegistryError(
                f"champion changed since the gate read it (expected {gated}, and version {rivals[0]}, gated against "
                f"it too, registered first and is being promoted): re-gate against the new champion and publish "
                f"again; if that publisher was killed, set version {rivals[0]}'s tag {STATE} to 'refused' first"
            )
        self._check_alias(expected)
        self._client.set_registered_model_alias(self.model_name, self.alias, str(version))

    def _check_alias(self, expected: Champion | None) -> None:
        current = self._alias_target()
        if current != (expected.version if expected else None):
            raise champion_changed(expected, f"v{current}" if current else None)

    def _alias_target(self) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            model = self._client.get_registered_model(self.model_name)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        target = model.aliases.get(self.alias)
        return None if target is None else int(target)

    def _applied(self, version: int) -> bool:
        """Whether the alias points at `version` after all (the server applied the move, then the answer was lost)."""
        try:
            return self._alias_target() == version
        except Exception:
            return False

    def _versions(self) -> list[ModelVersion]:
        found: list[ModelVersion] = []
        token = None
        while True:
            page = self._client.search_model_versions(f"name = '{self.model_name}'", page_token=token)
            found += page
            token = page.token
            if not token:
                return found

    def read_ledger(self) -> dict[str, Any] | None:
        return self._bounded("read the gate ledger", lambda: self._newest_ledger()[1])

    def update_ledger(self, change: Change) -> dict[str, Any]:
        """Change the gate ledger by creating its next revision (compare-and-set, the module docstring): a gate that
        loses the race to a rival reads the rival's revision and applies `change` again; `_LEDGER_TRIES` lost races
        in a row are a RegistryError, nothing half-written."""
        return self._bounded("update the gate ledger", lambda: self._update_ledger(change))

    def _update_ledger(self, change: Change) -> dict[str, Any]:
        from mlflow.exceptions import MlflowException

        self._ensure_model()
        for attempt in range(_LEDGER_TRIES):
            revision, current = self._newest_ledger()
            updated = change(current)
            text = json.dumps(updated, separators=(",", ":"))
            try:
                self._client.create_registered_model(
                    self._revision_name(revision + 1),
                    tags={LEDGER_TAG: text},
                    description=f"Gate ledger revision {revision + 1} of {self.model_name} (hpo-action).",
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                time.sleep(random.uniform(0.0, 0.05 * (attempt + 1)))  # a rival counted first: read its revision
                continue
            self._client.set_registered_model_tag(self.model_name, LEDGER_TAG, text)
            self._client.set_registered_model_tag(self.model_name, REVISION_TAG, str(revision + 1))
            return updated
        raise RegistryError(
            f"{self.uri}: the gate ledger kept changing under this gate ({_LEDGER_TRIES} rival updates won); "
            "nothing was counted, run the gate again"
        )

    def _newest_ledger(self) -> tuple[int, dict[str, Any] | None]:
        """The newest ledger revision and its content: from the hint on the model, up the chain while the next
        revision exists. Revision 0 is the model's own tag, where a ledger written before revisions existed lives."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self._client.get_registered_model(self.model_name).tags
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return 0, None
        revision, text = int(tags.get(REVISION_TAG, "0") or 0), None
        if revision == 0:
            text = tags.get(LEDGER_TAG)
        while True:
            try:
                newer = self._client.get_registered_model(self._revision_name(revision + 1))
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                break
            revision, text = revision + 1, newer.tags.get(LEDGER_TAG)
        if revision > 0 and text is None:  # the hint named a revision we did not walk over: read it
            text = self._client.get_registered_model(self._revision_name(revision)).tags.get(LEDGER_TAG)
        return revision, json.loads(text) if text else None

    def _revision_name(self, revision: int) -> str:
        return f"{self.model_name}.gates.r{revision}"

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.create_registered_model(self.model_name, description="Published by hpo-action.")
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _upload(self, files: dict[str, Path]) -> Run:
        run = self._client.create_run(self._experiment_id(), run_name=f"publish {self.model_name}")
        try:
            with tempfile.TemporaryDirectory(prefix="hpo-action-mlflow-") as staging:
                for name, source in files.items():
                    target = Path(staging) / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                self._client.log_artifacts(run.info.run_id, staging)
        except BaseException:
            self._end_run(run.info.run_id, "FAILED")
            raise
        return run

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        for _ in range(2):  # a publisher racing us may create it between our look and our create
            experiment = self._client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            try:
                return self._client.create_experiment(name)
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        raise RegistryError(f"{self.uri}: experiment {name!r} exists but cannot be read")

    def _register(self, files: dict[str, Path], run: Run, expected: Champion | None) -> ModelVersion:
        tags = {**evidence_tags(files), STATE: "pending", GATED_AGAINST: _revision(expected)}
        return self._client.create_model_version(
            self.model_name, source=run.info.artifact_uri, run_id=run.info.run_id, tags=tags
        )

    def _refuse(self, version: ModelVersion, error: BaseException) -> None:
        """Mark a version that did not become champion, so no later publication waits for it (best effort)."""
        reason = redact_text(str(error) or type(error).__name__, self._secrets())[:500]
        try:
            self._client.set_model_version_tag(self.model_name, version.version, STATE, "refused")
            self._client.set_model_version_tag(self.model_name, version.version, REFUSED, reason)
        except Exception as failure:
            logger.warning(
                "%s: could not tag version %s as refused (%s); set its tag %s to 'refused' by hand",
                self.uri,
                version.version,
                self._describe(failure),
                STATE,
            )
        self._end_run(version.run_id, "FAILED")

    def _finish(self, version: ModelVersion) -> None:
        """The alias moved: record it on the version (a failure here is a warning; history also reads the alias)."""
        try:
            self._client.set_model_version_tag(self.model_name, version.version, STATE, "promoted")
        except Exception as failure:
            logger.warning("%s: v%s is the champion but tagging it failed: %s", self.uri, version.version, failure)
        self._end_run(version.run_id, "FINISHED")

    def _end_run(self, run_id: str | None, status: str) -> None:
        if not run_id:
            return
        try:
            self._client.set_terminated(run_id, status)
        except Exception as failure:
            logger.warning("%s: could not close run %s: %s", self.uri, run_id, self._describe(failure))

    def _champion(self, version: ModelVersion, folder: Path | None = None) -> Champion:
        folder = folder or self._download(version)
        params = folder / PARAMS
        return Champion(
            version=int(version.version),
            path=folder,
            revision=f"v{version.version}",
            uri=self.uri,
            params=json.loads(params.read_text(encoding="utf-8")).get("params", {}) if params.is_file() else {},
        )

    def _download(self, version: ModelVersion) -> Path:
        """The version's artifacts in the cache, fetched once (into a staging folder, then renamed into place)."""
        from mlflow.artifacts import download_artifacts

        folder = self._folder(version)
        if folder.is_dir():
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".download-"))
        try:
            source = self._client.get_model_version_download_uri(self.model_name, version.version)
            fetched = download_artifacts(artifact_uri=source, dst_path=str(staging), tracking_uri=self.tracking_uri)
            try:
                os.replace(fetched, folder)
            except OSError:
                if not folder.is_dir():  # else another reader put the same version there first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def _keep_copy(self, files: dict[str, Path], version: ModelVersion) -> Path:
        """Lay the published files out as the version's cache folder, so the caller needs no download."""
        folder = self._folder(version)
        for name, source in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return folder

    def _folder(self, version: ModelVersion) -> Path:
        """Keyed by the server and the version's run as well: another server's (or a reset one's) v1 is another."""
        explicit = os.environ.get("HPO_ACTION_CACHE")
        root = Path(explicit).expanduser() if explicit else Path(tempfile.gettempdir()) / "hpo-action"
        identity = f"{redact_url(self.tracking_uri)}\0{version.run_id}\0{version.source}"
        key = hashlib.sha256(identity.encode()).hexdigest()[:12]
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.model_name)
        return root / "mlflow" / safe / f"v{version.version}-{key}"

    def _version_page(self, version: int) -> str:
        """The version's page in the MLflow UI (the server's address without credentials), else its model URI."""
        parts = urllib.parse.urlsplit(self.tracking_uri)
        if parts.scheme not in ("http", "https"):
            return self.load_reference(version)
        host = parts.netloc.rpartition("@")[2]
        name = urllib.parse.quote(self.model_name, safe="")
        return f"{parts.scheme}://{host}{parts.path.rstrip('/')}/#/models/{name}/versions/{version}"

    def _bounded(self, action: str, call: Callable[[], T]) -> T:
        """`call()` under one deadline for the whole operation, reads and MLflow's retries included."""
        with self._errors(action):
            return within(self.timeout, call)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """One RegistryError for every way MLflow can fail: the registry, the server without its password, and the
        server's answer with every secret replaced; the original exception (which may quote the URI) is dropped."""
        import requests
        from mlflow.exceptions import MlflowException

        try:
            yield
        except DeadlineExceeded:
            server = redact_text(self.tracking_uri, self._secrets())
            raise RegistryError(
                f"{self.uri}: could not {action} at {server}: no answer within {self.timeout:g} s (registry.timeout)"
            ) from None
        except (MlflowException, requests.RequestException) as error:
            server = redact_text(self.tracking_uri, self._secrets())
            raise RegistryError(f"{self.uri}: could not {action} at {server}: {self._describe(error)}") from None

    def _describe(self, error: BaseException) -> str:
        text = " ".join((getattr(error, "message", None) or str(error) or type(error).__name__).split())
        return redact_text(text, self._secrets())[:300]

    def _secrets(self) -> list[str]:
        return secret_values({**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri})


def evidence_tags(files: dict[str, Path]) -> dict[str, str]:
    """The gate's evidence as version tags: what a person filters and reads in the MLflow UI."""
    path = files.get(GATE)
    try:
        gate = GateDecision.read(path) if path is not None else None
    except GateError:
        gate = None
    if gate is None:
        return {}
    p = gate.primary
    tags = {
        "hpo_action.decision": gate.decision,
        "hpo_action.metric": p.metric,
        "hpo_action.test": p.test,
        "hpo_action.n": str(p.n),
        "hpo_action.candidate": f"{p.candidate:.6g}",
        "hpo_action.reference": f"{p.reference:.6g}",
        "hpo_action.delta": f"{p.delta:.6g}",
        "hpo_action.bound": f"{p.bound:.6g}",
        "hpo_action.p_value": f"{p.p_value:.6g}",
        "hpo_action.alpha": f"{p.alpha:g}",
        "hpo_action.test_fingerprint": gate.test_fingerprint or "",
        "hpo_action.adapter_sha256": gate.adapter_sha256 or "",
    }
    for row in gate.forgetting:
        key = re.sub(r"[^\w.-]", "_", row.name)
        tags[f"hpo_action.forgetting.{key}"] = (
            f"{row.status}: delta {row.delta:+.4g}, bound {row.bound:.4g}, margin {row.margin:g}, "
            f"{row.test} p = {row.p_value:.3g}"
        )
    return {key: value for key, value in tags.items() if value}


def _revision(expected: Champion | None) -> str:
    return f"v{expected.version}" if expected else "none"


def _client(uri: str, tracking_uri: str, timeout: float) -> MlflowClient:
    """MLflow's client for this server, quiet, each request limited to `timeout` seconds and two retries (MLflow's
    defaults wait minutes on a server that does not answer); a user's own MLFLOW_* settings win."""
    settings: dict[str, Any] = {
        **_QUIET,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(timeout))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    }
    for name, value in settings.items():
        os.environ.setdefault(name, value)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError(
            f"registry {uri}: the MLflow client is not installed; pip install 'hpo-action[mlflow]'"
        ) from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
