"""The bundled tiny demo model: cache, atomic build, tokenizer, chat template, determinism, skills."""

from __future__ import annotations

import json
import random
import string
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hpo_action.train import demo_model
from hpo_action.train.demo_model import DEMO_MODEL_ID, demo_cache_root, ensure_demo_model, is_demo_model

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"


@pytest.fixture(scope="module")
def built(_demo_cache: Path) -> Path:
    """The full demo model, built once into the session's temporary cache (shared with other tests)."""
    return ensure_demo_model(_demo_cache)


@pytest.fixture(scope="module")
def tokenizer(built: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(built)


@pytest.fixture(scope="module")
def model(built: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(built).eval()


def greedy_exact_match(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict]) -> float:
    """Share of rows whose greedy continuation of the prompt, up to EOS, equals the completion."""
    hits = 0
    for row in rows:
        ids = tokenizer(row["prompt"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False)
        hits += tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True) == row["completion"]
    return hits / len(rows)


def test_is_demo_model() -> None:
    assert is_demo_model(DEMO_MODEL_ID)
    assert not is_demo_model("Qwen/Qwen2.5-0.5B")
    assert not is_demo_model("./hpo-action/tiny-demo")


def test_cache_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HPO_ACTION_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo_cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("HPO_ACTION_CACHE")
    assert demo_cache_root() == tmp_path / "xdg" / "hpo-action"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert demo_cache_root() == tmp_path / "home" / ".cache" / "hpo-action"


def test_build_is_deterministic_and_keeps_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    demo_model._build(tmp_path / "a", steps=20)
    assert torch.equal(torch.rand(3), expected_draw), "the build must not consume the caller's RNG"
    demo_model._build(tmp_path / "b", steps=20)
    first = load_file(tmp_path / "a" / "model.safetensors")
    second = load_file(tmp_path / "b" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_lost_race_uses_the_winners_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / f"tiny-demo-v{demo_model._VERSION}"

    def other_process_wins(folder: Path, steps: int) -> None:
        (folder / "mine.txt").write_text("loser")
        target.mkdir()
        (target / "winner.txt").write_text("winner")

    monkeypatch.setattr(demo_model, "_build", other_process_wins)
    assert ensure_demo_model(tmp_path) == target
    assert sorted(p.name for p in target.iterdir()) == ["winner.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [target.name], "the staging folder must go"


def test_crashed_build_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def crash(folder: Path, steps: int) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(demo_model, "_build", crash)
    with pytest.raises(RuntimeError, match="mid-build"):
        ensure_demo_model(tmp_path)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []  # only the builders' lock file remains


def test_concurrent_first_uses_build_once_and_a_killed_builders_leftovers_go(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import threading

    leftover = tmp_path / f".tiny-demo-v{demo_model._VERSION}.dead1234"  # a builder killed mid-build
    leftover.mkdir()
    builds, started = [], threading.Event()

    def slow_build(folder: Path, steps: int) -> None:
        builds.append(folder)
        started.set()
        time.sleep(1.0)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(demo_model, "_build", slow_build)
    results: list[Path] = []
    first = threading.Thread(target=lambda: results.append(ensure_demo_model(tmp_path)))
    first.start()
    started.wait(10)
    results.append(ensure_demo_model(tmp_path))  # arrives while the first one builds: waits, then reuses it
    first.join()
    assert len(builds) == 1 and len(set(results)) == 1
    assert not leftover.exists()
    assert "waiting for another process that is building the demo model" in capfd.readouterr().err


@pytest.mark.slow
def test_second_call_is_a_cache_hit(built: Path) -> None:
    weights = built / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert ensure_demo_model(built.parent) == built
    assert time.perf_counter() - start < 1.0
    assert weights.stat().st_mtime_ns == before
    assert built.name == f"tiny-demo-v{demo_model._VERSION}"


@pytest.mark.slow
def test_folder_loads_with_auto_classes(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    config = model.config
    assert config.model_type == "llama"
    assert config.vocab_size == len(tokenizer)
    assert config.tie_word_embeddings
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert (config.pad_token_id, config.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)


@pytest.mark.slow
def test_tokenizer_is_character_level_and_lossless(tokenizer: PreTrainedTokenizerBase) -> None:
    text = string.printable[:95] + "\n  two  spaces . , ! ?\nend"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text), "one token per character, no BOS/EOS added"
    assert tokenizer.decode(ids) == text
    assert tokenizer("abc")["input_ids"] == tokenizer.convert_tokens_to_ids(["a", "b", "c"])
    assert tokenizer("é")["input_ids"] == [tokenizer.unk_token_id]
    special_ids = {getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos", "unk")}
    assert None not in special_ids
    assert len(special_ids) == 4
    assert tokenizer.decode([*ids[:3], tokenizer.eos_token_id], skip_special_tokens=True) == text[:3]


@pytest.mark.slow
def test_chat_template_renders(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "copy: cat = "}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|system|>Be brief.<|end|>\n<|user|>copy: cat = <|end|>\n<|assistant|>"
    closed = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "cat"}], tokenize=False, add_generation_prompt=False
    )
    assert closed.endswith("<|assistant|>cat<|end|>\n")
    ids = tokenizer(rendered)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|system|>")
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    assert tokenizer.decode(ids) == rendered


@pytest.mark.slow
def test_base_copies_but_cannot_shift(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    rng = random.Random(0)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8))) for _ in range(20)]
    copy_rows = [{"prompt": f"copy: {word} = ", "completion": word} for word in words]
    assert greedy_exact_match(model, tokenizer, copy_rows) >= 0.8
    test_rows = [json.loads(line) for line in (QUICKSTART / "test.jsonl").read_text().splitlines()[:20]]
    assert greedy_exact_match(model, tokenizer, test_rows) <= 0.1, "the quickstart task must need tuning"
