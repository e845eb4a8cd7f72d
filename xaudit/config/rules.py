"""The ``rules:`` section of the config: how the surrogate forest is grown and its rules kept.

Field names are part of the public config interface; keep them stable.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

MaxFeatures = Union[Literal["sqrt", "log2"], Annotated[float, Field(gt=0.0, le=1.0)]]


class RulesParams(BaseModel):
    """Parameters of rule extraction (surrogate forest -> rules -> ranking -> top-N).

    Method: a random forest imitates the network's predictions from its layer features;
    every root-to-leaf path becomes a rule, rules are pruned as in inTrees (Deng 2019,
    "Interpreting tree ensembles with inTrees", Int J Data Sci Anal 7:277) and ranked by
    an L1 logistic regression on the rule indicators, importance as in RuleFit (Friedman &
    Popescu 2008, "Predictive learning via rule ensembles", Ann Appl Stat 2:916).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_n: int = Field(10, ge=1, description="How many ranked rules the report shows.")
    n_estimators: int = Field(100, ge=1, description="Trees in the surrogate forest.")
    max_depth: int = Field(
        3, ge=1, description="Depth of each tree, hence the longest rule before pruning."
    )
    min_samples_leaf: int = Field(
        3, ge=1, description="Fewest subjects in a leaf, hence in a rule of the forest."
    )
    max_features: MaxFeatures = Field(
        "sqrt",
        description="Features tried per split: 'sqrt', 'log2' or a fraction in (0, 1].",
    )
    prune_threshold: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description=(
            "Drop a condition if removing it raises the rule's error (w.r.t. the network's "
            "predictions) by at most this much (inTrees' maxDecay, absolute)."
        ),
    )
    cv_folds: int = Field(
        5, ge=2, description="Folds for the cross-validated fidelity of the surrogate."
    )
    max_rules: int = Field(
        500,
        ge=1,
        description="Rules kept for ranking, the most frequent in the forest first.",
    )
    merge_equivalent: bool = Field(
        True,
        description=(
            "Merge rules that cover exactly the same subjects, keeping the shortest, so "
            "the top-N does not repeat one rule in several spellings."
        ),
    )
    l1_C: float = Field(
        1.0,
        gt=0.0,
        description="Inverse L1 strength of the ranking regression; smaller keeps fewer rules.",
    )
    max_iter: int = Field(
        2000, ge=1, description="Solver iterations of the ranking regression (liblinear)."
    )
    skew_min_v: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Cramer's V from which a rule's coverage of a group column is skewed.",
    )
    skew_alpha: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        description="Family-wise significance for skew flags (Bonferroni over rules x columns).",
    )
    seed: int = Field(0, ge=0, description="Seed of the forest, folds and solver.")
    n_jobs: int = Field(1, ge=1, description="Processes for growing the forest.")
