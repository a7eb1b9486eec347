"""train/models.py: the base model loaded once, adapters attached and removed, dtypes, and clear load errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpo_action.config import ModelConfig
from hpo_action.errors import ConfigError
from hpo_action.train.demo_model import ensure_demo_model
from hpo_action.train.models import check_method, load_base_model, load_tokenizer, pick_dtype

DEMO = ModelConfig(name="hpo-action/tiny-demo")
PARAMS = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}


@pytest.fixture(scope="module")
def base():
    return load_base_model(DEMO)


def test_the_demo_loads_on_cpu_in_float32_frozen_for_lora(base):
    assert base.device == "cpu" and base.dtype == torch.float32 and not base.bf16 and not base.fp16
    assert not any(p.requires_grad for p in base.model.parameters())
    assert base.tokenizer.pad_token is not None


def test_attach_trains_only_the_adapter_and_detach_restores_the_bare_base(base):
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    trained = base.attach(PARAMS)
    trainable = [name for name, p in trained.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    with torch.no_grad():
        next(p for n, p in trained.named_parameters() if "lora_B" in n).add_(1.0)  # as if it had trained
    base.detach(trained)
    after = base.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert not any("lora" in name for name in after)


def test_full_fine_tuning_trains_everything_and_detach_restores_the_kept_weights():
    full = load_base_model(ModelConfig(name="hpo-action/tiny-demo", method="full"))
    before = {k: v.clone() for k, v in full.model.state_dict().items()}
    model = full.attach({})
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        next(iter(model.parameters())).add_(1.0)
    full.detach(model)
    assert all(torch.equal(full.model.state_dict()[k], before[k]) for k in before)


def test_dtype_choice():
    assert pick_dtype("auto", "cpu") == torch.float32  # CPU bf16 is slow and lossy
    assert pick_dtype("bfloat16", "cpu") == torch.bfloat16
    assert pick_dtype("float16", "cuda") == torch.float16


def test_qlora_without_cuda_is_a_clear_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        check_method(ModelConfig(name="hpo-action/tiny-demo", method="qlora"))
    check_method(DEMO)  # lora runs anywhere


def test_a_local_folder_loads_like_a_hub_model(tmp_path: Path):
    folder = ensure_demo_model()
    tokenizer = load_tokenizer(ModelConfig(name=str(folder)))
    assert tokenizer.pad_token is not None


def test_a_missing_model_names_the_key_and_the_fix(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"model\.name: cannot load"):
        load_tokenizer(ModelConfig(name=str(tmp_path / "no-such-model")))
