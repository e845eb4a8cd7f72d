"""Typed, frozen run configuration: `load_config(path, overrides)`.

The YAML's top-level sections (``data``, ``model``, ``attribution``, ``features``,
``rules``, ``bias``, ``output``) are the public interface. Every error names the key
path, what was expected and what was given; all errors of a file are reported together
and the file is rejected whole before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xaudit.attribution import get_method
from xaudit.bias.params import BiasParams
from xaudit.errors import ConfigError, XauditError, did_you_mean
from xaudit.interrogate.params import InterrogateParams
from xaudit.rules.params import RulesParams

DEFAULT_METHODS: dict[str, dict[str, Any]] = {"saliency": {}, "integrated_gradients": {"steps": 32}, "gradcam": {}}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformsConfig(Section):
    """Preprocessing between the stored image and the model's input (MONAI transforms)."""

    orientation: str | None = Field(None, description="axis codes, e.g. RAS; None keeps the stored orientation")
    spacing: list[float] | None = Field(None, description="target voxel size in mm, one per spatial dim")
    spatial_size: list[int] | None = Field(None, description="final input size, one per spatial dim")
    size_mode: Literal["pad_crop", "resize"] = Field("pad_crop", description="how spatial_size is reached")
    intensity: Literal["zscore", "zscore_nonzero", "minmax", "none"] = "none"
    python: str | None = Field(None, description="module:function returning the user's own MONAI transform")

    @field_validator("orientation")
    @classmethod
    def _axis_codes(cls, value):
        """2 or 3 letters, one of L/R, A/P, S/I per axis (MONAI's Orientation codes)."""
        if value is None:
            return value
        pairs = [{"L", "R"}, {"A", "P"}, {"S", "I"}]
        used = [next((k for k, pair in enumerate(pairs) if c in pair), None) for c in value.upper()]
        if len(value) not in (2, 3) or None in used or len(set(used)) != len(used):
            raise ValueError(f"must be 2 or 3 axis codes, one of L/R, A/P, S/I per axis (e.g. RAS, LPS), got {value!r}")
        return value.upper()

    @field_validator("spacing", "spatial_size")
    @classmethod
    def _positive(cls, value):
        if value is not None and any(v <= 0 for v in value):
            raise ValueError(f"must be positive numbers, got {value}")
        return value


class DataConfig(Section):
    manifest: Path
    subject_column: str = "subject_id"
    image_column: str | list[str] = "image"
    label_column: str | None = "label"
    group_columns: list[str] = Field(default_factory=list)
    mask_column: str | None = None
    roi_columns: list[str] = Field(default_factory=list)
    split_column: str = "split"
    split: str | list[str] | None = None
    transforms: TransformsConfig = TransformsConfig()
    spatial_dims: Literal[2, 3] | None = Field(None, description="2 or 3; None infers it from the model or images")
    batch_size: int = Field(4, ge=1)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    on_error: Literal["skip", "fail"] = "skip"

    @property
    def image_columns(self) -> list[str]:
        return [self.image_column] if isinstance(self.image_column, str) else list(self.image_column)


class MonaiNetConfig(Section):
    network: str
    args: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Path | None = None


class FactoryConfig(Section):
    function: str = Field(description="module:function returning an eager torch.nn.Module (trusted code)")
    args: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Path | None = None


class ModelConfig(Section):
    monai: MonaiNetConfig | None = None
    factory: str | FactoryConfig | None = None
    torchscript: Path | None = None
    classes: list[str]
    layer: str | None = Field(None, description="module path for Grad-CAM, TCAV and spatial features")

    @model_validator(mode="after")
    def _exactly_one_source(self):
        given = [k for k in ("monai", "factory", "torchscript") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"name exactly one of monai, factory, torchscript; got {given or 'none'}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be two or more distinct names, got {self.classes}")
        return self

    @property
    def factory_config(self) -> FactoryConfig | None:
        if isinstance(self.factory, str):
            return FactoryConfig(function=self.factory)
        return self.factory


class AttributionConfig(Section):
    target: str = Field("predicted", description="predicted, label, or a class name")
    methods: dict[str, dict[str, Any]] = Field(default_factory=lambda: dict(DEFAULT_METHODS))
    seed: int = 0
    max_batch: int | None = Field(
        None, ge=1, description="samples per forward+backward (capped by memory); unset: the fastest size that fits, "
        "measured at the start of a run (bigger is not always faster on a CPU)")
    memory_fraction: float = Field(0.5, gt=0, le=1, description="share of free device memory to use")
    downsample: int = Field(32, ge=4, description="largest side of the per-subject maps kept for dataset statistics")
    atlas: Path | None = Field(None, description="integer label map (NIfTI, world space) for region methods (lime regions: atlas)")
    amp: Literal["off", "auto", "bf16", "fp16"] = Field(
        "off", description="mixed precision for the model's passes: auto = fp16 on CUDA, off on CPU. Maps stay "
        "float32 and correlate >= 0.99 with float32 maps under fp16 (tested); bf16 is coarser (down to 0.91 for "
        "occlusion). LRP, DeepLIFT, guided backprop, deconvnet, guided Grad-CAM and LIME always run in float32")

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off_is_false(cls, value):
        """YAML 1.1 reads a bare `off` as False (and `on` as True)."""
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("methods", mode="before")
    @classmethod
    def _none_is_empty(cls, value):
        if isinstance(value, list):
            return {name: {} for name in value}
        return {k: (v or {}) for k, v in (value or {}).items()}


class FeaturesConfig(Section):
    layers: list[str] | None = Field(None, description="module paths; None = the input of the final linear layer")
    pooling: Literal["avg", "max"] = "avg"


class QualityConfig(Section):
    """Explanation-quality checks on a sample of subjects (each costs extra passes)."""

    subjects: int = Field(4, ge=0, description="subjects sampled for the checks; 0 turns them off")
    block: int = Field(4, ge=1, description="edge of the perturbed blocks, in model-input voxels")
    steps: int = Field(10, ge=2, description="points on the deletion/insertion curves")
    randomisation: bool = Field(True, description="run the cascading parameter-randomisation test")
    randomisation_steps: int = Field(4, ge=1, description="layer groups randomised, top first")


class ReportConfig(Section):
    title: str = "xaudit report"
    slices: int = Field(5, ge=1, le=12)


class Config(Section):
    data: DataConfig
    model: ModelConfig
    attribution: AttributionConfig = AttributionConfig()
    features: FeaturesConfig = FeaturesConfig()
    rules: RulesParams = RulesParams()
    bias: BiasParams = BiasParams()
    quality: QualityConfig = QualityConfig()
    report: ReportConfig = ReportConfig()
    interrogate: InterrogateParams | None = Field(
        None, description="present (even empty, `interrogate: {}`): `xaudit run` also inverts the network's"
        " representations; absent: only `xaudit interrogate RUN_DIR` does, with its defaults")
    output: Path = Path("runs/xaudit")
    device: str = "auto"
    seed: int = 0
    provenance: dict[str, Any] | None = Field(None, description="written by xaudit into config.resolved.yaml; ignored")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def digest(self) -> str:
        """Short hash of the resolved config, for run metadata and compare."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


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
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}".splitlines()[0]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item)
    from xaudit.data.loading import add_import_dir

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
        raise ConfigError(f"--set expects key.path=value, got {item!r}")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: `{part}` is a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = value


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
            given = "" if "Got " in msg else f" Got {err.get('input')!r} instead."
            lines.append(f"`{key}`: {msg}.{given}")
    lines = list(dict.fromkeys(lines))
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
        try:
            cls = get_method(name)
        except XauditError as exc:
            problems.append(f"`attribution.methods.{name}`: {exc}")
            continue
        if not isinstance(params, dict):
            problems.append(f"`attribution.methods.{name}` must be a mapping of parameters. Got {params!r} instead.")
            continue
        try:
            cls.Params(**params)
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(["attribution", "methods", name, *map(str, err["loc"])])
                if err["type"] == "extra_forbidden":
                    known = list(cls.Params.model_fields)
                    problems.append(f"unknown key `{key}`.{did_you_mean(err['loc'][-1], known)} Valid keys here: {known}")
                else:
                    problems.append(f"`{key}`: {err['msg'].rstrip('.')}. Got {err.get('input')!r} instead.")
        if params.get("regions") == "atlas" and config.attribution.atlas is None:
            problems.append(f"`attribution.methods.{name}.regions` is 'atlas': set `attribution.atlas` to a label map NIfTI.")
        if cls.needs_layer and config.model.layer is None:
            problems.append(f"`model.layer` is required by method {name!r}: name the module, e.g. a late conv block.")
    if config.attribution.target not in ("predicted", "label", *config.model.classes):
        choices = ["predicted", "label", *config.model.classes]
        problems.append(
            f"`attribution.target` must be one of {choices}.{did_you_mean(config.attribution.target, choices)}"
            f" Got {config.attribution.target!r} instead."
        )
    problems += _interrogate_problems(config)
    if problems:
        head = "invalid config" if len(problems) == 1 else f"invalid config ({len(problems)} problems)"
        raise ConfigError(head + ":\n  " + "\n  ".join(problems))


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
        problems.append(f"`interrogate.group_column`: {params.group_column!r} is not in `data.group_columns` {groups}."
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
    methods = {name: get_method(name).Params(**params).model_dump(mode="json") for name, params in config.attribution.methods.items()}
    attribution = config.attribution.model_copy(update={"methods": methods, "atlas": resolve(config.attribution.atlas)})
    return config.model_copy(
        update={"data": data, "model": model, "attribution": attribution, "output": resolve(config.output)}
    )
