"""The one error tree of hpo-action; the CLI turns these into one-line messages and exit codes.

HpoActionError                      root; exit code 1 unless a subclass says otherwise
├── ConfigError(ValueError)         bad config, flag or argument          → exit 2
├── DataError(ValueError)           missing, empty or malformed data      → exit 2
├── TrialError(RuntimeError)        one trial failed; the study goes on   → exit 1
├── GateError(ValueError)           predictions that cannot be gated      → exit 2
├── RegistryError(RuntimeError)     the registry refused or is unreachable → exit 1
├── OutputError(RuntimeError)       the output folder could not be written (disk full) → exit 1
└── VerificationError(RuntimeError) a file differs from its manifest, or a signature does not verify → exit 1
"""

from __future__ import annotations


class HpoActionError(Exception):
    """Root of every error the tool raises on purpose."""

    exit_code = 1


class ConfigError(HpoActionError, ValueError):
    """A config key, CLI flag or argument is wrong; the message names it and the fix."""

    exit_code = 2


class DataError(HpoActionError, ValueError):
    """A data file or dataset cannot be used; the message names the file and the row."""

    exit_code = 2


class TrialError(HpoActionError, RuntimeError):
    """A single trial failed (non-finite loss, crash); recorded as a FAIL trial."""


class GateError(HpoActionError, ValueError):
    """Predictions cannot be paired or tested."""

    exit_code = 2


class RegistryError(HpoActionError, RuntimeError):
    """Publishing or reading the registry failed."""


class OutputError(HpoActionError, RuntimeError):
    """Writing to the output folder failed mid-run (disk full); what was written before stays intact."""


class VerificationError(HpoActionError, RuntimeError):
    """A file is not the one that was gated or signed (changed, added, missing, a symlink), or a signature or
    attestation does not verify; the message names the file."""
