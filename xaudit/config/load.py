"""Reading a YAML config: `load_config(path, overrides)`, `config_from_dict`, `apply_override`.

Every error names the key path, what was expected and what was given; all errors of a
file are reported together and the file is rejected whole before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from xaudit.config.methods import NEEDS_LAYER, PARAMS
from xaudit.config.schema import Config
from xaudit.config.user_code import add_import_dir
from xaudit.errors import ConfigError, choices_message, did_you_mean, short


#: a config's size once every YAML alias is expanded (nodes, plus one per 100 characters of
#: text); a real config has a few hundred, an alias bomb ("billion laughs") billions
MAX_YAML_EXPANDED = 100_000
MAX_YAML_DEPTH = 50
MAX_LINE = 400
MAX_CONFIG_BYTES = 1 << 20


def load_yaml(text: str, source: str):
    """``yaml.safe_load`` that refuses alias bombs and recursive aliases quickly.

    Aliases are followed once per node (memoised), so the check costs the file's size,
    not its expansion.

    Raises:
        ConfigError: naming ``source``, for invalid YAML, an oversized expansion, a
            recursive alias or nesting deeper than `MAX_YAML_DEPTH`.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply (more than {MAX_YAML_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}".splitlines()[0][:MAX_LINE]) from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, source: str) -> None:
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    open_nodes: set[int] = set()
    while stack:
        node, depth, children_done = stack.pop()
        if id(node) in sizes and not children_done:
            continue
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children) + (
                len(node.value) // 100 if isinstance(node, yaml.ScalarNode) else 0)
            if sizes[id(node)] > MAX_YAML_EXPANDED:
                raise ConfigError(
                    f"{source}: YAML aliases expand to more than {MAX_YAML_EXPANDED:,} values (line"
                    f" {node.start_mark.line + 1}); a config needs far fewer: write the values out, or use fewer aliases")
            continue
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{source}: nested too deeply (more than {MAX_YAML_DEPTH} levels, line {node.start_mark.line + 1})")
        if id(node) in open_nodes:
            raise ConfigError(f"{source}: a YAML alias refers to itself (line {node.start_mark.line + 1}); remove the recursion")
        open_nodes.add(id(node))
        stack.append((node, depth, True))
        for child in children:
            if id(child) in open_nodes:
                raise ConfigError(f"{source}: a YAML alias refers to itself (line {child.start_mark.line + 1}); remove the recursion")
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


_PATH_KEYS = [("data", "manifest"), ("model", "torchscript"), ("output",)]
_NESTED_PATH_KEYS = [("model", "monai", "checkpoint"), ("model", "factory", "checkpoint")]


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override, validate and resolve a YAML config.

    Args:
        path: the YAML file. Relative paths inside it are relative to its folder.
        overrides: ``key.path=value`` strings; values parsed as YAML.

    Returns:
        The frozen `Config`.

    Raises:
        ConfigError: naming every invalid key with what was expected and given.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError(f"config file {str(path)!r} is not a regular file (a folder, pipe or device)")
    if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(path)!r} is {path.stat().st_size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"), f"config file {str(path)!r}")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read as text: {exc}".splitlines()[0]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item)
    add_import_dir(path.resolve().parent)
    return config_from_dict(raw, base_dir=path.resolve().parent)


def config_from_dict(raw: dict[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a config mapping; relative paths resolve against ``base_dir``."""
    base_dir = base_dir or Path.cwd()
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, raw)) from None
    _check_methods(config)
    return _resolve_paths(config, base_dir)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override to the raw mapping in place."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key.path=value, got {short(item)}")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {short(key, 120)}: `{short(part, 60)}` is a value, not a section")
        node = child
    source = f"--set {short(key.strip(), 60)}"
    try:
        node[parts[-1]] = load_yaml(value, source) if value.strip() else None
    except ConfigError as exc:
        if "not valid YAML" not in str(exc):
            raise
        node[parts[-1]] = value  # not YAML: the text as given


def format_validation_error(exc: ValidationError, raw: dict[str, Any]) -> str:
    """One line per problem: key path, expectation, given value (with did-you-mean)."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "union["))]
        loc = [p for p in loc if p not in ("str", "list[str]", "FactoryConfig", "MonaiNetConfig")]
        key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            hint = did_you_mean(loc[-1], known)
            lines.append(f"unknown key `{key}`.{hint} Valid keys here: {sorted(known)}" if known else f"unknown key `{key}`.{hint}")
        elif err["type"] == "missing":
            lines.append(f"`{key}` is required but missing.")
        else:
            msg = err["msg"].removeprefix("Value error, ").rstrip(".")
            given = "" if "Got " in msg else f" Got {short(err.get('input'))} instead."
            lines.append(f"`{key}`: {msg}.{given}")
    lines = list(dict.fromkeys(_cut(line) for line in lines))
    head = "invalid config" if len(lines) == 1 else f"invalid config ({len(lines)} problems)"
    return head + ":\n  " + "\n  ".join(lines)


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _check_methods(config: Config) -> None:
    problems = []
    for name, params in config.attribution.methods.items():
        params_model = PARAMS.get(name)
        if params_model is None:
            problems.append(f"`attribution.methods.{name}`: {choices_message('attribution method', name, PARAMS)}")
            continue
        if not isinstance(params, dict):
            problems.append(f"`attribution.methods.{name}` must be a mapping of parameters. Got {short(params)} instead.")
            continue
        try:
            params_model(**params)
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(["attribution", "methods", name, *map(str, err["loc"])])
                if err["type"] == "extra_forbidden":
                    known = list(params_model.model_fields)
                    problems.append(f"unknown key `{key}`.{did_you_mean(err['loc'][-1], known)} Valid keys here: {known}")
                else:
                    problems.append(f"`{key}`: {err['msg'].rstrip('.')}. Got {short(err.get('input'))} instead.")
        if params.get("regions") == "atlas" and config.attribution.atlas is None:
            problems.append(f"`attribution.methods.{name}.regions` is 'atlas': set `attribution.atlas` to a label map NIfTI.")
        if name in NEEDS_LAYER and config.model.layer is None:
            problems.append(f"`model.layer` is required by method {name!r}: name the module, e.g. a late conv block.")
    if config.attribution.target not in ("predicted", "label", *config.model.classes):
        choices = ["predicted", "label", *config.model.classes]
        problems.append(
            f"`attribution.target` must be one of {choices}.{did_you_mean(config.attribution.target, choices)}"
            f" Got {short(config.attribution.target)} instead."
        )
    problems += _interrogate_problems(config)
    if problems:
        head = "invalid config" if len(problems) == 1 else f"invalid config ({len(problems)} problems)"
        raise ConfigError(head + ":\n  " + "\n  ".join(_cut(p) for p in problems))


def _cut(line: str) -> str:
    """One problem line, at most `MAX_LINE` characters (keys and values are the user's)."""
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 20] + f"... ({len(line)} chars)"


def _interrogate_problems(config: Config) -> list[str]:
    params = config.interrogate
    if params is None:
        return []
    problems = []
    if config.model.torchscript is not None:
        problems.append("`interrogate` (the config section or `xaudit interrogate`) needs forward hooks, which a"
                        " TorchScript model does not offer: configure the model as `model.monai` or `model.factory`"
                        " (eager Python), or leave interrogation out for this model.")
    groups = config.data.group_columns
    if params.group_column is not None and params.group_column not in groups:
        problems.append(f"`interrogate.group_column`: {short(params.group_column)} is not in `data.group_columns` {groups}."
                        f"{did_you_mean(params.group_column, groups)}")
    return problems


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base_dir / p).resolve())

    data = config.data.model_copy(update={"manifest": resolve(config.data.manifest)})
    model_update: dict[str, Any] = {"torchscript": resolve(config.model.torchscript)}
    if config.model.monai is not None:
        model_update["monai"] = config.model.monai.model_copy(update={"checkpoint": resolve(config.model.monai.checkpoint)})
    factory = config.model.factory_config
    if factory is not None:
        model_update["factory"] = factory.model_copy(update={"checkpoint": resolve(factory.checkpoint)})
    model = config.model.model_copy(update=model_update)
    methods = {name: PARAMS[name](**params).model_dump(mode="json") for name, params in config.attribution.methods.items()}
    attribution = config.attribution.model_copy(update={"methods": methods, "atlas": resolve(config.attribution.atlas)})
    return config.model_copy(
        update={"data": data, "model": model, "attribution": attribution, "output": resolve(config.output)}
    )
