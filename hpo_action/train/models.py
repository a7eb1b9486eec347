"""Load the base model and tokenizer once per worker; attach and remove adapters per trial.

Reloading a model for every trial is the main overhead of naive HPO loops, and leaking the previous
trial's adapter or optimizer state into the next one is its main bug. This module owns both concerns.
"""

from __future__ import annotations

import gc
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import ModelConfig
from hpo_action.errors import ConfigError
from hpo_action.notices import say
from hpo_action.train.demo_model import ensure_demo_model, is_demo_model
from hpo_action.train.model_source import public_model_name
from hpo_action.train.peft_variants import KeptBase, keep_base, lora_config, save_adapter, save_initial
from hpo_action.train.threads import limit_torch_threads

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class BaseModel:
    """A loaded base model and tokenizer, kept across trials."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    config: ModelConfig
    device: str
    dtype: torch.dtype
    source: str
    _snapshot: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _kept: KeptBase | None = field(default=None, repr=False)  # base weights a PiSSA/OLoRA trial rewrites

    @property
    def bf16(self) -> bool:
        import torch

        return self.dtype == torch.bfloat16

    @property
    def fp16(self) -> bool:
        import torch

        return self.dtype == torch.float16

    def attach(self, params: dict[str, Any]) -> Any:
        """Return the model to train in this trial: a fresh LoRA adapter, or the base itself for full FT."""
        if self.config.method == "full":
            if self._snapshot is None:
                self._snapshot = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self.model.requires_grad_(True)
            return self.model
        from peft import get_peft_model

        lora = lora_config(params, self.config, self.model)
        self._kept = keep_base(self.model, lora)
        trained = get_peft_model(self.model, lora)
        if self._kept is not None:
            save_initial(trained, self._kept)
        return trained

    def save(self, trained: Any, folder: Path) -> None:
        """Save the trained weights so they load on the original base model (see train/peft_variants.py); an
        adapter names its base by its public name, never this machine's folder (the version ships this file)."""
        save_adapter(trained, folder, self._kept)
        config = folder / ADAPTER_FILES[0]
        if config.is_file():  # after saving: PEFT looks the name up (a folder, else the Hub) while it saves
            data = json.loads(config.read_text(encoding="utf-8"))
            data["base_model_name_or_path"] = public_model_name(self.config)
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def frozen_copy(self) -> tuple[Any, int]:
        """A frozen copy of the base for the KL term of full fine-tuning (LoRA disables its adapter instead), and
        the bytes it holds: full fine-tuning with kl_to_base keeps the model twice."""
        import copy

        reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        size = sum(t.numel() * t.element_size() for t in (*reference.parameters(), *reference.buffers()))
        return reference, size

    def detach(self, trained: Any) -> None:
        """Remove the trial's adapter (or restore the kept weights) so the next trial starts from the base."""
        if self.config.method == "full":
            assert self._snapshot is not None
            self.model.load_state_dict(self._snapshot)
        else:
            self.model = trained.unload()
            if self._kept is not None:
                self._kept.restore(self.model)
                self._kept = None
        self.model.zero_grad(set_to_none=True)
        free_memory()


def free_memory() -> None:
    """Drop cached allocations between trials; GPU memory otherwise grows trial after trial."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def pick_dtype(name: str, device: str) -> torch.dtype:
    """'auto' is bfloat16 on a GPU that supports it and float32 elsewhere (CPU bf16 is slow and lossy)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def load_base_model(cfg: ModelConfig) -> BaseModel:
    """Load once per worker; QLoRA quantizes to 4-bit with bitsandbytes and needs CUDA."""
    import torch
    from transformers import AutoModelForCausalLM

    limit_torch_threads()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = pick_dtype(cfg.dtype, device)
    source = _source(cfg)
    say(f"loading model {cfg.name} ({cfg.method}, {str(dtype).removeprefix('torch.')} on {device})")
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    if cfg.method == "qlora":
        kwargs["quantization_config"] = _four_bit_config(dtype, device)
        kwargs["device_map"] = {"": 0}
    tokenizer = load_tokenizer(cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise _cannot_load(cfg, err) from None
    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.to(device)
    model.requires_grad_(cfg.method == "full")
    return BaseModel(model=model, tokenizer=tokenizer, config=cfg, device=device, dtype=dtype, source=source)


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The base model's tokenizer alone: cheap, so a supervisor checks the model name and tokenizes with it."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            _source(cfg), trust_remote_code=cfg.trust_remote_code, revision=cfg.revision
        )
    except (OSError, ValueError) as err:
        raise _cannot_load(cfg, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_method(cfg: ModelConfig) -> None:
    """Fail now, not in a worker, when the machine cannot run the method (QLoRA without CUDA/bitsandbytes)."""
    import torch

    if cfg.method == "qlora":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        _four_bit_config(pick_dtype(cfg.dtype, device), device)


def _source(cfg: ModelConfig) -> str:
    return str(ensure_demo_model()) if is_demo_model(cfg.name) else cfg.name


def _cannot_load(cfg: ModelConfig, err: Exception) -> ConfigError:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError(
        f"model.name: cannot load {cfg.name!r}: {first_line} (offline? use a local folder or 'hpo-action/tiny-demo')"
    )


def _four_bit_config(dtype: torch.dtype, device: str) -> Any:
    import torch

    if device != "cuda":
        raise ConfigError("model.method: qlora needs a CUDA GPU (bitsandbytes 4-bit); on CPU use method: lora")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("model.method: qlora needs bitsandbytes: pip install 'hpo-action[qlora]'") from None
    from transformers import BitsAndBytesConfig

    compute = dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def adapter_sha256(folder: Path) -> str:
    """Hash of the trained weights (a PEFT adapter, or a fully fine-tuned model): what is being evaluated."""
    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():
        files = [folder / name for name in ADAPTER_FILES]
    else:
        files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    missing = next((path.name for path in files if not path.is_file()), None)
    if missing or len(files) < 2:
        raise ConfigError(
            f"adapter: {folder}: missing {missing or '*.safetensors'} "
            "(expected a PEFT adapter or a model saved with save_pretrained)"
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
