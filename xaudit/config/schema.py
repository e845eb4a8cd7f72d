"""The run configuration's sections: typed, frozen pydantic models (read by `xaudit.config.load`).

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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from xaudit.config.bias import BiasParams
from xaudit.config.interrogate import InterrogateParams
from xaudit.config.interventions import InterventionsParams
from xaudit.config.rules import RulesParams

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
    max_image_gb: float = Field(4.0, gt=0, description="largest image (GiB, from its header: voxels x bytes per voxel,"
                                " at least 4) read; a larger one is refused before reading, as a decompression bomb")

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

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, classes: list[str]) -> list[str]:
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"must be two or more distinct names, in the order of the model's outputs. Got {classes} instead.")
        return classes

    @model_validator(mode="after")
    def _exactly_one_source(self):
        given = [k for k in ("monai", "factory", "torchscript") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"name exactly one of monai, factory, torchscript; got {given or 'none'}")
        return self

    @property
    def factory_config(self) -> FactoryConfig | None:
        if isinstance(self.factory, str):
            return FactoryConfig(function=self.factory)
        return self.factory


class AttributionConfig(Section):
    target: str = Field("predicted", description="predicted, label, or a class name")
    methods: dict[str, dict[str, Any]] = Field(default_factory=lambda: dict(DEFAULT_METHODS))
    seed: int = Field(0, ge=0, description="Seed of the methods' noise and baselines (per subject, from this).")
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
    budget: float = Field(0.1, gt=0, description="time budget as a fraction of the subject pass's time (at"
                          " least 2.5 s); methods run cheapest first, and one predicted to end past it is skipped with a note")


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
    interventions: InterventionsParams = InterventionsParams()
    report: ReportConfig = ReportConfig()
    interrogate: InterrogateParams | None = Field(
        None, description="present (even empty, `interrogate: {}`): `xaudit run` also inverts the network's"
        " representations; absent: only `xaudit interrogate RUN_DIR` does, with its defaults")
    output: Path = Path("runs/xaudit")
    output_layout: Literal["xaudit", "bids"] = Field(
        "xaudit", description="where the attribution volumes go: xaudit = attributions/<method>/<id>.nii.gz; bids = a "
        "BIDS derivative dataset, sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>]_desc-<method>_attribution"
        ".nii.gz with a JSON sidecar, and dataset_description.json")
    device: str = "auto"
    seed: int = Field(0, ge=0, description="The run's seed, recorded in the provenance and the report; each stage "
                      "draws from its own (attribution.seed, rules.seed, bias.seed, interventions.seed).")
    provenance: dict[str, Any] | None = Field(None, description="written by xaudit into config.resolved.yaml; ignored")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def digest(self) -> str:
        """Short hash of the resolved config, for run metadata and compare."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
