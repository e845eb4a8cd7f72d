"""The sample cohort's study design: who is in which split, with which label and site.

The confounded training split copies a common pitfall: healthy controls from one source
(a public dataset) and patients from one hospital, so site predicts the label
(Zech et al., "Variable generalization performance of a deep learning model to detect
pneumonia in chest radiographs: a cross-sectional study", PLoS Medicine 15, 2018).
The control split is the same design without the confound, and the test split fills
every class x site cell equally so the shortcut shows as an accuracy drop off the diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from xaudit.sample.scanner import SITES

CLASSES = ("healthy", "lesion")
# The site each class mostly comes from in the confounded split.
MAJORITY_SITE = {"healthy": "site_A", "lesion": "site_B"}
MANIFEST_COLUMNS = ["subject_id", "image", "label", "site", "scanner", "sex", "split",
                    "mask", "lesion_mask"]


@dataclass(frozen=True)
class CohortDesign:
    """Subjects per split and class x site cell.

    Attributes:
        confounded_per_class: subjects per class in split `train`.
        confound: fraction of a class's `train` subjects from its majority site.
        control_per_cell: subjects per class x site cell in split `train_control`.
        test_per_cell: subjects per class x site cell in split `test`.
    """

    confounded_per_class: int = 60
    confound: float = 0.9
    control_per_cell: int = 60
    test_per_cell: int = 20


FULL_DESIGN = CohortDesign()
QUICK_DESIGN = CohortDesign(confounded_per_class=10, confound=0.9, control_per_cell=3,
                            test_per_cell=3)


def _split_rows(design: CohortDesign) -> list[dict[str, str]]:
    """One row (label, site, split) per subject, in a fixed order."""
    rows = []
    for label in CLASSES:
        majority = MAJORITY_SITE[label]
        minority = next(site for site in SITES if site != majority)
        n_majority = int(round(design.confound * design.confounded_per_class))
        n_minority = design.confounded_per_class - n_majority
        rows += [{"label": label, "site": majority, "split": "train"}] * n_majority
        rows += [{"label": label, "site": minority, "split": "train"}] * n_minority
    for split, per_cell in (("train_control", design.control_per_cell),
                            ("test", design.test_per_cell)):
        for label in CLASSES:
            for site in SITES:
                rows += [{"label": label, "site": site, "split": split}] * per_cell
    return rows


def subject_table(design: CohortDesign, seed: int) -> pd.DataFrame:
    """The cohort's subjects with their labels, sites, scanners, sex and splits.

    Subject ids are assigned after a seeded shuffle, so an id says nothing about the split
    or the label.

    Args:
        design: the number of subjects per split and cell.
        seed: random seed for the shuffle and for sex.

    Returns:
        DataFrame sorted by subject_id with columns subject_id, label, site, scanner, sex,
        split (paths are added when the images are written).
    """
    rng = np.random.default_rng([seed, 101])
    table = pd.DataFrame(_split_rows(design))
    table = table.iloc[rng.permutation(len(table))].reset_index(drop=True)
    width = max(3, len(str(len(table))))
    table.insert(0, "subject_id", [f"sub-{i + 1:0{width}d}" for i in range(len(table))])
    table["scanner"] = table["site"].map(lambda site: SITES[site].scanner)
    # sex is random and unrelated to everything else: a negative control for the audit
    table["sex"] = rng.choice(["F", "M"], size=len(table))
    return table[["subject_id", "label", "site", "scanner", "sex", "split"]]
