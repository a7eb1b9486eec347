"""A tiny causal LM built and pretrained locally, so demos and tests need no Hub download.

The model is character-level and pretrained for about half a minute on synthetic lines that teach two
skills: copying a word (``copy: hello = hello``) and the alphabet order (``next: c = d`` and runs
like ``abc: fghij``). A LoRA adapter can combine them into a new skill, e.g. the Caesar shift of the
quickstart example, which the base model cannot do before tuning.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import shutil
import string
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hpo_action.notices import progress, say
from hpo_action.train.threads import limit_torch_threads

if TYPE_CHECKING:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

DEMO_MODEL_ID = "hpo-action/tiny-demo"

# Bump whenever the tokenizer, model or pretraining changes, so stale caches are not reused.
_VERSION = 1
_SEED = 1234
_PRETRAIN_STEPS = 800
_BATCH_SIZE = 32
_LEARNING_RATE = 3e-3
_WARMUP_STEPS = 50

_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
_CHARS = (*string.printable[:95], "\n")  # digits, letters, punctuation, space, newline
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_Pair = tuple[str, str]  # (prompt, completion)

logger = logging.getLogger(__name__)


def is_demo_model(name: str) -> bool:
    """Tell whether a model name refers to the bundled demo model rather than a Hub repository."""
    return name == DEMO_MODEL_ID


def demo_cache_root() -> Path:
    """Folder where the demo model is cached: $HPO_ACTION_CACHE, else the XDG cache dir."""
    explicit = os.environ.get("HPO_ACTION_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hpo-action"


def ensure_demo_model(cache_root: Path | None = None) -> Path:
    """Return a folder holding the pretrained tiny demo model + tokenizer; build it on first use.

    Builders take a lock, so concurrent first uses build it once (the others wait, saying so, then use it); the
    build happens in a temporary folder renamed into place, so a crash never leaves a half-written model, and the
    next builder removes what a killed one left behind.
    """
    root = Path(cache_root) if cache_root is not None else demo_cache_root()
    target = root / f"tiny-demo-v{_VERSION}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root / f".{target.name}.lock"):
        if target.is_dir():  # built by the process we waited for
            return target
        for stale in root.glob(f".{target.name}.*"):  # a killed builder's; none is live while we hold the lock
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
        staging.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            say("building the tiny demo model, once: about 30 s on an idle machine (cached in HPO_ACTION_CACHE)")
            _build(staging, _PRETRAIN_STEPS)
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
                logger.info("Another process built %s first; using its copy", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process that is building the demo model ({path.parent})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(folder: Path, steps: int) -> None:
    """Build tokenizer and model, pretrain for ``steps`` steps and save both into ``folder``."""
    import torch

    limit_torch_threads()

    tokenizer = _build_tokenizer()
    # fork_rng keeps the caller's global torch RNG untouched while making the build reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = _build_model(tokenizer)
        _pretrain(model, tokenizer, steps)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _build_tokenizer() -> PreTrainedTokenizerFast:
    """The demo model's tokenizer (character_tokenizer below)."""
    return character_tokenizer(_SPECIAL_TOKENS, _CHARS, _CHAT_TEMPLATE, max_length=256)


def character_tokenizer(
    specials: Sequence[str], chars: Sequence[str], chat_template: str, max_length: int
) -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one token per character, decoding is the exact inverse; built in code, so tests
    and benchmarks need no download. `specials` are pad, bos, eos and unk, then the chat template's own tokens.

    Calling it on text adds no BOS/EOS: ``tokenizer("abc")`` gives exactly three ids. Characters outside `chars`
    map to the unk token.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    pad, bos, eos, unk = specials[:4]
    vocab = {token: i for i, token in enumerate((*specials, *chars))}
    # BPE without merges and without a pre-tokenizer splits text into single characters.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    backend.decoder = decoders.Fuse()  # join tokens without inserting spaces
    backend.add_special_tokens(list(specials))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        additional_special_tokens=list(specials[4:]),
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,  # else decode would turn " ." into "."
        model_max_length=max_length,
    )


def demo_config() -> LlamaConfig:
    """The demo model's architecture, without weights: what `_build_model` instantiates and `init` sizes by."""
    from transformers import LlamaConfig

    vocab = (*_SPECIAL_TOKENS, *_CHARS)  # the tokenizer's ids, in order
    return LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=vocab.index("<pad>"),
        bos_token_id=vocab.index("<s>"),
        eos_token_id=vocab.index("</s>"),
    )


def _build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A ~0.4M-parameter Llama: big enough to learn copying, small enough to train in seconds."""
    from transformers import LlamaForCausalLM

    config = demo_config()
    assert (config.vocab_size, config.pad_token_id) == (len(tokenizer), tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _corpus_line(rng: random.Random) -> _Pair:
    """One synthetic (prompt, completion) pair; the loss is taken on the completion only."""
    letters = string.ascii_lowercase
    draw = rng.random()
    if draw < 0.6:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(3, 8)))
        return f"copy: {word} = ", word
    if draw < 0.8:
        i = rng.randrange(26)
        return f"next: {letters[i]} = ", letters[(i + 1) % 26]
    start, length = rng.randrange(26), rng.randint(4, 12)
    return "abc: ", (letters * 2)[start : start + length]


def _pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, steps: int) -> None:
    """Plain AdamW loop on freshly sampled lines with linear warmup and decay."""
    import torch

    rng = random.Random(_SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=_LEARNING_RATE, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / _WARMUP_STEPS) * (1.0 - step / steps)
    )
    model.train()
    with progress("pretraining the demo model", steps, " steps") as advance:
        for _ in range(steps):
            _pretrain_step(model, tokenizer, optimizer, schedule, rng)
            advance()
    model.eval()


def _pretrain_step(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    rng: random.Random,
) -> None:
    import torch

    pairs = [_corpus_line(rng) for _ in range(_BATCH_SIZE)]
    input_ids, labels = _collate(tokenizer, pairs)
    attention_mask = (input_ids != tokenizer.pad_token_id).long()
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


def _collate(tokenizer: PreTrainedTokenizerFast, pairs: list[_Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``prompt + completion + EOS`` ids, and labels masking prompt and padding."""
    import torch

    prompts = tokenizer([prompt for prompt, _ in pairs])["input_ids"]
    completions = tokenizer([completion for _, completion in pairs])["input_ids"]
    rows, targets = [], []
    for prompt_ids, completion_ids in zip(prompts, completions, strict=True):
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
        rows.append(prompt_ids + completion_ids)
        targets.append([-100] * len(prompt_ids) + completion_ids)
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    labels = torch.tensor([row + [-100] * (width - len(row)) for row in targets])
    return input_ids, labels
