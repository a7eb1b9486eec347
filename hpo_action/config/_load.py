"""Reading a config: YAML (duplicate keys refused), validation with one-line errors, overrides from the command
line, and relative paths resolved against the config file's folder."""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from hpo_action.config._sections import HpoConfig, did_you_mean
from hpo_action.errors import ConfigError
from hpo_action.sources import locate


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at `loc`, to suggest its real field names; a list index or a mapping's
    key in `loc` (e.g. gate.forgetting.0.margn, search.space.lora_r.hihg) steps into the item's model."""
    node: Any = HpoConfig
    for part in loc[:-1]:
        model = _model_in(node)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            node = model.model_fields[part].annotation
        elif model is None and get_origin(node) is not None:
            node = get_args(node)[-1]  # list[Item] or dict[str, Item]: the item
        else:
            return None
    return _model_in(node)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation names, itself or as the one model of an optional (`Model | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        models = [m for m in map(_model_in, get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


# Keys that once existed: a config that still sets one is told why it went, not only that it is unknown.
REMOVED_KEYS = {
    ("gate", "confidence"): "removed: the gate shows only the bounds of its own test (each one-sided at 1 - alpha, "
    "together the two-sided 1 - 2*alpha interval); delete the key",
}


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        owner = _model_at(loc)
        hint = did_you_mean(str(loc[-1]), owner.model_fields) if owner else ""
        message = REMOVED_KEYS.get(loc, f"unknown key{hint}")
    else:
        message = first["msg"].removeprefix("Value error, ")
        field, sep, rest = message.partition(": ")
        path = (*loc, *field.split(".")) if sep and " " not in field else ()
        owner = _model_at(path) if path else None
        if owner is not None and path[-1] in owner.model_fields:  # a check about one field (gate.score_range): name it
            key, message = ".".join(map(str, path)), rest
        if first["type"] != "missing" and "input" in first and not isinstance(first["input"], dict):
            message += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    suffix = f" [+{more} more problem{'s' if more > 1 else ''}]" if more else ""
    return f"{source}: {key}: {message}{suffix}"


def parse_config(raw: dict[str, Any], source: str = "config", base_dir: Path | None = None) -> HpoConfig:
    """Validate a raw mapping; relative paths resolve against `base_dir` (the config file's folder)."""
    try:
        cfg = HpoConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    except ConfigError as err:  # a metric that cannot be imported, raised by its own check
        raise ConfigError(f"{source}: {err}") from None
    if base_dir is not None:
        _resolve_paths(cfg, base_dir)
    return cfg


def load_config(path: str | Path) -> HpoConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass an existing YAML file with -c)")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with model, data and search sections")
    return parse_config(raw, source=str(path), base_dir=path.resolve().parent)


def apply_overrides(cfg: HpoConfig, overrides: dict[str, Any], source: str = "command line") -> HpoConfig:
    """A re-validated copy with dotted keys (e.g. 'search.timeout') replaced; None (`--set key=null`) unsets a key,
    so it takes its default again (method-dependent defaults are resolved after every override)."""
    raw = cfg.model_dump(exclude_unset=True)
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"{source}: {dotted}: {part!r} is not a section")
            node = node[part]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return parse_config(raw, source=source)


def parse_set_option(item: str) -> tuple[str, Any]:
    """Parse one `--set key.path=value` item; the value is read as YAML (numbers, lists, booleans, null)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.learning_rate=1e-3")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None


def _resolve_paths(cfg: HpoConfig, base_dir: Path) -> None:
    """Local paths become absolute (against the config's folder); Hub ids and URLs stay as they are."""
    data = cfg.data
    data.train = _local_or_hub(data.train, "data.train", base_dir)
    if data.validation:
        data.validation = _local_or_hub(data.validation, "data.validation", base_dir)
    if data.test:
        data.test = _local_or_hub(data.test, "data.test", base_dir)
    for index, source in enumerate(data.replay):
        source.data = _local_or_hub(source.data, f"data.replay.{index}.data", base_dir)
    for benchmark in cfg.gate.forgetting:
        if benchmark.data:
            benchmark.data = _absolute(benchmark.data, base_dir)
        if benchmark.include_path:
            benchmark.include_path = _absolute(benchmark.include_path, base_dir)
    if cfg.registry.uri and "://" not in cfg.registry.uri:  # a folder; schemes are the registry's business
        cfg.registry.uri = _absolute(cfg.registry.uri, base_dir)
    if cfg.registry.signing.key:
        cfg.registry.signing.key = _absolute(cfg.registry.signing.key, base_dir)
    if not cfg.model.name.startswith("hpo-action/"):
        cfg.model.name = _local_or_hub(cfg.model.name, "model.name", base_dir, allow_missing=True)
    cfg.output.dir = _absolute(cfg.output.dir, base_dir)
    storage = cfg.search.storage
    if storage and storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        relative = storage.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            cfg.search.storage = "sqlite:///" + _absolute(relative, base_dir)
    elif storage and "://" not in storage:
        cfg.search.storage = _absolute(storage, base_dir)


def _absolute(value: str, base_dir: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def _local_or_hub(value: str, key: str, base_dir: Path, allow_missing: bool = False) -> str:
    """The absolute path of a local source, or the Hub id as given; a name that is neither stays as written when
    `allow_missing` (the model loader says 'folder not found'), else it is an error."""
    try:
        source = locate(value, key, base_dir, allow_split=key.startswith("data."))
    except ConfigError:
        if allow_missing:
            return value
        raise
    return source.value + (f":{source.split}" if source.split else "") if source.kind == "hub" else source.value
