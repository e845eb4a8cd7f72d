"""The thresholds and resampling settings of the bias checks: the config's ``bias:`` section.

Every field is public (users set it as ``bias.<name>`` in the config), so names are short
and each carries its meaning and default in ``Field(description=...)``. The defaults
follow conventions named in the descriptions (Cohen's "large" effect sizes, the TCAV
paper's 0.05, a permutation test that can reach p = 0.005).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Severity = Literal["info", "warning", "critical"]


class BiasParams(BaseModel):
    """Thresholds that turn the bias statistics into findings, plus resampling settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_severity: Severity = Field(
        "warning",
        description="`xaudit run --fail-on-findings` exits 1 when a finding is at or above this.",
    )
    seed: int = Field(0, ge=0, description="Seed of every resampling, fold split and clustering.")
    min_group_size: int = Field(
        5, ge=2,
        description="Fewest subjects a group value (or class x group cell) needs to enter a "
        "comparison; smaller ones are reported with a note.",
    )
    train_split: str = Field(
        "train", description="Value of the split column that marks training subjects."
    )
    require_behaviour: bool = Field(
        True,
        description="Indirect signature evidence (probes, feature roles, where the model looks, "
        "concepts, strategy clusters) is reported as info when the model's behaviour was "
        "tested within class for that group column and does not depend on it (no "
        "group_metrics cell finding, no masked-input signature finding at warning or above). "
        "A representation that merely carries a scanner signature is common; a decision "
        "that rests on it is the failure. False: every check keeps its own severity.",
    )
    # design check
    confound_cramers_v: float = Field(
        0.5, ge=0, le=1,
        description="Bias-corrected Cramer's V between a group column and the label at which "
        "the design is reported as confounded (warning).",
    )
    confound_cramers_v_critical: float = Field(
        0.8, ge=0, le=1, description="Cramer's V at which the confound is critical."
    )
    # representation probes
    cv_folds: int = Field(5, ge=2, description="Stratified folds of the linear probes.")
    permutations: int = Field(
        200, ge=1, description="Label permutations of the probes' permutation test."
    )
    probe_p_value: float = Field(
        0.01, gt=0, lt=1, description="Permutation p-value at or below which a probe counts."
    )
    probe_balanced_accuracy_warning: float = Field(
        0.65, ge=0, le=1,
        description="Cross-validated balanced accuracy of a within-class group probe that "
        "raises a warning (chance is 1 / number of group values).",
    )
    probe_balanced_accuracy_critical: float = Field(
        0.8, ge=0, le=1, description="Balanced accuracy of a within-class group probe that is critical."
    )
    # feature roles
    role_effect: float = Field(
        0.14, ge=0, le=1,
        description="Epsilon-squared (bias-corrected eta-squared) at which a feature counts as "
        "associated with a group or the label; 0.14 is Cohen's 'large'.",
    )
    role_importance_share_warning: float = Field(
        0.25, ge=0, le=1,
        description="Share of the rule surrogate's importance on group-signature features "
        "that raises a warning.",
    )
    role_importance_share_critical: float = Field(
        0.5, ge=0, le=1, description="Importance share on group-signature features that is critical."
    )
    # where the model looks
    background_share_warning: float = Field(
        0.25, ge=0, le=1,
        description="Mean share of |attribution| outside the foreground that raises a warning.",
    )
    background_share_critical: float = Field(
        0.5, ge=0, le=1, description="Mean share of |attribution| outside the foreground that is critical."
    )
    background_enrichment_warning: float = Field(
        1.0, ge=0,
        description="The background finding also needs the background's |attribution| per voxel "
        "to be at least this multiple of the foreground's (1 = as much attention per voxel "
        "outside the anatomy as inside); at twice this value it is critical.",
    )
    border_share_warning: float = Field(
        0.2, ge=0, le=1,
        description="Mean share of |attribution| in the volume's border shell that raises a "
        "warning (when it is also at least twice the shell's share of the volume).",
    )
    share_p_value: float = Field(
        0.01, gt=0, lt=1,
        description="Benjamini-Hochberg adjusted p-value at or below which attribution shares "
        "differ between group values within a class.",
    )
    share_effect: float = Field(
        0.14, ge=0, le=1,
        description="Kruskal-Wallis eta-squared (rank effect size) a share difference needs.",
    )
    # behaviour by group
    bootstrap: int = Field(1000, ge=10, description="Bootstrap resamples of every confidence interval.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the percentile intervals.")
    disparity_warning: float = Field(
        0.1, ge=0, le=1,
        description="Difference of a metric between group values (or between class x group "
        "cells) that raises a warning when its interval excludes 0.",
    )
    disparity_critical: float = Field(0.2, ge=0, le=1, description="Disparity that is critical.")
    background_auc: float = Field(
        0.7, ge=0.5, le=1,
        description="ROC AUC of the labels from the model's output with the foreground "
        "blanked at which the model counts as separating classes from the background alone.",
    )
    # TCAV
    tcav_random_sets: int = Field(
        10, ge=2, description="CAVs per concept, each against a fresh draw of counterexamples; the "
        "concept's TCAV score is their mean.",
    )
    tcav_null_sets: int = Field(
        200, ge=19, description="Random subject sets of each concept's size and class mix scored "
        "as the null (one CAV each); the smallest p-value is 1 / (1 + this).",
    )
    tcav_p_value: float = Field(
        0.05, gt=0, lt=1,
        description="Bonferroni-adjusted two-sided p-value (the concept's score ranked among the "
        "null sets' scores) at or below which a concept counts (Kim et al. 2018 use 0.05).",
    )
    tcav_score_difference: float = Field(
        0.2, ge=0, le=1,
        description="Difference between a concept's mean TCAV score and the null sets' mean "
        "mean that a significant concept also needs.",
    )
    # SpRAy
    spray_clusters: int | None = Field(
        None, ge=2, description="Clusters per class; None chooses them by the eigengap."
    )
    spray_max_clusters: int = Field(8, ge=2, description="Most clusters the eigengap may choose.")
    spray_neighbors: int | None = Field(
        None, ge=2, description="Neighbours of the k-NN affinity graph; None uses max(5, sqrt(n))."
    )
    spray_max_maps: int = Field(
        2000, ge=10, description="Most maps clustered per class; a bigger class is subsampled evenly in "
        "manifest order (the dense affinity and its eigenproblem grow with the square and cube of the "
        "maps), and the report says so.",
    )
    spray_ami: float = Field(
        0.3, ge=0, le=1,
        description="Adjusted mutual information between clusters and a group column that "
        "raises a warning (when it also exceeds the label's by `spray_ami_margin`).",
    )
    spray_ami_margin: float = Field(
        0.2, ge=0, le=1, description="How much the group's AMI must exceed the label's."
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> BiasParams:
        pairs = [
            ("confound_cramers_v", "confound_cramers_v_critical"),
            ("probe_balanced_accuracy_warning", "probe_balanced_accuracy_critical"),
            ("role_importance_share_warning", "role_importance_share_critical"),
            ("background_share_warning", "background_share_critical"),
            ("disparity_warning", "disparity_critical"),
        ]
        for low, high in pairs:
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"`{low}` must be <= `{high}`. Got {getattr(self, low)} > {getattr(self, high)}."
                )
        smallest_p = 1.0 / (self.permutations + 1)
        if smallest_p > self.probe_p_value:
            needed = int(round(1.0 / self.probe_p_value)) - 1
            raise ValueError(
                f"`permutations` must be >= {needed} so that a permutation p-value can reach "
                f"`probe_p_value`={self.probe_p_value} (the smallest is 1/(permutations+1)). "
                f"Got {self.permutations} instead."
            )
        if self.spray_clusters is not None and self.spray_clusters > self.spray_max_clusters:
            raise ValueError(
                f"`spray_clusters` must be <= `spray_max_clusters`={self.spray_max_clusters}. "
                f"Got {self.spray_clusters} instead."
            )
        return self
