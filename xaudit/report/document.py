"""The report's content model, shared by the HTML and Markdown renderers.

The section builders produce a `Document` of numbered `Section`s holding a few plain block
types; the two renderers only turn blocks into markup. Every string in a block is plain,
unescaped text (much of it comes from the manifest or config): escaping is the renderers'
job, done in one place each, so no builder can forget it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Badge:
    """A severity (``critical``, ``warning``, ``info``) or verdict label shown as a badge."""

    text: str
    kind: str


Cell = Union[str, Badge]


@dataclass
class Paragraph:
    text: str


@dataclass
class Subheading:
    """A heading inside a section (``<h3>`` / ``###``)."""

    text: str


@dataclass
class Note:
    """A muted one-liner: a skipped check, a caveat, a check's own notes."""

    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    """Header and rows of cells; ``numeric[j]`` right-aligns column j; a cell may hold several lines."""

    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    numeric: list[bool] | None = None

    def __post_init__(self) -> None:
        if self.numeric is None:
            self.numeric = [False] + [True] * (len(self.header) - 1)


@dataclass
class Figure:
    """A PNG figure: saved as ``figures/<name>.png``, embedded in the HTML."""

    name: str
    caption: str
    png: bytes
    number: int = 0


@dataclass
class Link:
    """A line that links to another page of the run (a relative path)."""

    text: str
    href: str


@dataclass
class StripPlots:
    """The group view: one strip plot per per-subject statistic, every subject a linked point.

    ``subjects``, ``hrefs`` (relative page links, "" for none), ``colors`` (the colour key,
    e.g. the site) and ``rows`` (the row key, e.g. the class) are aligned per subject;
    ``stats`` holds (name, values per subject; NaN where missing). HTML draws inline SVG
    with a small inline script (linked highlighting, search); Markdown notes where it is.
    """

    subjects: list[str]
    hrefs: list[str]
    colors: list[str]
    rows: list[str]
    stats: list[tuple[str, list[float]]]
    color_title: str = ""
    caption: str = ""


@dataclass
class FindingCard:
    """One finding: badge, title, message, the evidence and the threshold that fired."""

    severity: str
    title: str
    message: str
    check: str
    points_to: str
    evidence: list[tuple[str, str]]
    threshold: list[tuple[str, str]]


@dataclass
class Verdict:
    """The opening statement: the verdict sentence coloured by the highest severity."""

    label: str
    sentence: str
    severity: str
    counts: dict[str, int]


Block = Union[Paragraph, Subheading, Note, Bullets, Table, Figure, Link, StripPlots, FindingCard, Verdict]


@dataclass
class Section:
    """A numbered section; ``anchor`` is its HTML id and Markdown link target."""

    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)
    number: int = 0

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self

    @property
    def heading(self) -> str:
        return f"{self.number}. {self.title}" if self.number else self.title


@dataclass
class Document:
    """Title, subtitle lines and the ordered sections; figures numbered in order."""

    title: str
    subtitle: list[str]
    sections: list[Section]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        figure = 0
        for k, section in enumerate(self.sections, start=1):
            section.number = k
            for block in section.blocks:
                if isinstance(block, Figure):
                    figure += 1
                    block.number = figure

    @property
    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]
