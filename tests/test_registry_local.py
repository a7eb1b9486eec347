"""The local registry: compare-and-swap, history, crash safety at every step, and racing publishers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from hpo_action.errors import RegistryError
from hpo_action.ship.registry import LocalRegistry, open_registry

STEPS = ("copy", "staged", "version", "pointer-written")


def _files(tmp_path: Path, tag: str) -> dict[str, Path]:
    folder = tmp_path / f"files-{tag}"
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    names = ("adapter_config.json", "adapter_model.safetensors", "gate.json", "params.json", "predictions/test.jsonl")
    for name in names:
        (folder / name).write_text(f'{{"tag": "{tag}", "file": "{name}"}}')
    return {name: folder / name for name in names}


def test_publish_moves_the_champion_only_from_the_expected_one(tmp_path: Path):
    registry = open_registry(str(tmp_path / "reg"))
    assert isinstance(registry, LocalRegistry)
    assert registry.read_champion() is None
    first = registry.publish(_files(tmp_path, "a"), expected=None)
    assert (first.version, first.revision) == (1, "v1")
    assert (first.path / "adapter_config.json").read_text() == '{"tag": "a", "file": "adapter_config.json"}'
    with pytest.raises(RegistryError, match="champion changed since the gate read it"):
        registry.publish(_files(tmp_path, "b"), expected=None)  # a stale read: there is a champion now
    second = registry.publish(_files(tmp_path, "b"), expected=registry.read_champion())
    assert second.version == 2
    assert registry.read_champion().version == 2
    assert [c.version for c in registry.history()] == [1, 2]
    assert (first.path / "adapter_config.json").read_text().startswith('{"tag": "a"')  # versions are immutable


class _Crash(Exception):
    pass


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_keeps_the_old_champion_and_shows_no_half_version(tmp_path: Path, step: str):
    root = tmp_path / "reg"
    LocalRegistry(root).publish(_files(tmp_path, "a"), expected=None)

    def fail(at: str) -> None:
        if at == step:
            raise _Crash(at)

    crashing = LocalRegistry(root, fail_at=fail)
    with pytest.raises(_Crash):
        crashing.publish(_files(tmp_path, "b"), expected=crashing.read_champion())
    registry = LocalRegistry(root)
    champion = registry.read_champion()
    assert champion.version == 1
    assert [c.version for c in registry.history()] == [1]
    assert not list((root / "versions").glob(".staging-*"))
    assert not list(root.glob(".champion.json.*"))
    upcoming = registry.next_version(champion)  # what the card names: one past every folder, orphans included
    after = registry.publish(_files(tmp_path, "c"), expected=champion)  # and the registry still works
    assert after.version == upcoming
    assert after.version >= 2 and registry.read_champion().version == after.version
    assert (after.path / "gate.json").read_text().startswith('{"tag": "c"')


def _race(root: str, files: dict[str, Path], barrier, results) -> None:
    registry = LocalRegistry(root)
    expected = registry.read_champion()
    barrier.wait()
    try:
        results.put(registry.publish(files, expected).version)
    except RegistryError as err:
        results.put(str(err))


def test_two_concurrent_publishers_exactly_one_wins(tmp_path: Path):
    root = str(tmp_path / "reg")
    LocalRegistry(root).publish(_files(tmp_path, "a"), expected=None)
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_race, args=(root, _files(tmp_path, tag), barrier, results)) for tag in ("x", "y")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    outcomes = [results.get(timeout=5) for _ in workers]
    assert sorted(o for o in outcomes if isinstance(o, int)) == [2]
    assert sum("champion changed" in str(o) for o in outcomes) == 1
    assert LocalRegistry(root).read_champion().version == 2


def test_a_kill_9_leftover_staging_folder_is_removed_by_the_next_publish(tmp_path: Path):
    root = tmp_path / "reg"
    first = LocalRegistry(root).publish(_files(tmp_path, "a"), expected=None)
    leftover = root / "versions" / ".staging-dead1234"  # what a publisher killed mid-copy leaves behind
    (leftover / "nested").mkdir(parents=True)
    (leftover / "nested" / "adapter_model.safetensors").write_bytes(b"half")
    LocalRegistry(root).publish(_files(tmp_path, "b"), expected=first)
    assert not leftover.exists()
