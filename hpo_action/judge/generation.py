"""Generation settings of a trained model: greedy by default, or what the decoding search chose, saved beside the
adapter as `generation_config.json` (a transformers GenerationConfig, so `GenerationConfig.from_pretrained(dir)`
reads it) and read back by every evaluation of that adapter.

Sampling is seeded per batch of `evaluate.batch_size` rows, so the same settings and seed give the same outputs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from hpo_action.files import write_text_atomic
from hpo_action.layout import claim

GENERATION_CONFIG = "generation_config.json"
_OURS = "hpo_action"  # the key that marks a file written by us (a fully fine-tuned model ships its own)
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


@dataclass(frozen=True)
class Decoding:
    """How a model generates: greedy (do_sample false) or sampled with these settings and seed."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    repetition_penalty: float = 1.0
    max_new_tokens: int = 32
    seed: int = 0

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `model.generate`: the sampling ones only when sampling."""
        kwargs: dict[str, Any] = {
            "do_sample": self.do_sample,
            "num_beams": 1,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kwargs

    def describe(self) -> str:
        if not self.do_sample:
            penalty = f", repetition_penalty {self.repetition_penalty:.3g}" if self.repetition_penalty != 1 else ""
            return f"greedy{penalty}, max_new_tokens {self.max_new_tokens}"
        return (
            f"sampling: temperature {self.temperature:.3g}, top_p {self.top_p:.3g}, top_k {self.top_k}, "
            f"repetition_penalty {self.repetition_penalty:.3g}, max_new_tokens {self.max_new_tokens}, seed {self.seed}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decoding:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def write_generation_config(folder: Path, decoding: Decoding, defaults: dict[str, Any]) -> Path:
    """generation_config.json beside the weights: the chosen settings plus the model's special token ids (from
    `defaults`, the base model's generation config, or the file a full model already has)."""
    from transformers import GenerationConfig

    path = Path(folder) / GENERATION_CONFIG
    existing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    ids = {key: value for key in _TOKEN_IDS if (value := existing.get(key, defaults.get(key))) is not None}
    kwargs = {key: value for key, value in decoding.generate_kwargs().items() if key != "num_beams"}
    config = GenerationConfig(**ids, **kwargs, **{_OURS: {"decoding": decoding.to_json()}})
    write_text_atomic(path, config.to_json_string(use_diff=True))
    claim(path.parent, GENERATION_CONFIG)  # best/'s marker lists it, so a later study may replace best/
    return path


def read_decoding(folder: Path | None) -> Decoding | None:
    """The settings the decoding search saved beside an adapter; None when there are none (greedy)."""
    path = Path(folder) / GENERATION_CONFIG if folder is not None else None
    if path is None or not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    ours = data.get(_OURS) if isinstance(data, dict) else None
    return Decoding.from_json(ours["decoding"]) if isinstance(ours, dict) and "decoding" in ours else None
