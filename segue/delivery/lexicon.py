"""Psycholinguistic category scores: the open stand-in for LIWC (spec B.3.2, "Linguistic usage").

The chapter scores creators' updates and backers' comments on 64 LIWC categories and keeps the
categories whose on-time and late means differ by a two-sample t-test at alpha = 0.05/64 (12 for
updates, 5 for comments; they are not named). LIWC's dictionary is proprietary. [AMBIG] spec choice:
make the linguistic group pluggable; the user supplies a LIWC-format ``.dic`` file or an open lexicon.

- :class:`Lexicon` is the interface: ``name``, ``categories`` and ``score(text)``, returning, like
  LIWC, the percentage of the text's words that fall in each category.
- :class:`EmpathLexicon` (default) uses Empath (Fast, Chen & Bernstein, CHI 2016; PyPI ``empath``),
  whose 194 categories ship inside the wheel, so nothing is downloaded at run time.
- :class:`DicLexicon` reads a LIWC-format ``.dic`` file (LIWC2007/2015 layout: category table between
  ``%`` lines, then ``word<TAB>cat ids``; a trailing ``*`` matches any ending), so a LIWC licensee
  gets LIWC's own categories.

How Empath differs from LIWC: its categories are topical and emotional word lists grown from seed
words with a neural embedding and crowd-filtered (e.g. ``shopping``, ``sadness``, ``negative_emotion``),
not LIWC's hand-built function-word, grammar and psychological-process categories (pronouns,
articles, tentative, certainty, ...); it has 194 categories instead of 64, so the Bonferroni alpha
becomes 0.05/194; and its tokeniser and word lists match whole words, with no LIWC-style wildcard stems.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from segue.errors import ConfigError, DataError

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


@runtime_checkable
class Lexicon(Protocol):
    """A word-category lexicon scored like LIWC: percent of words per category."""

    name: str
    categories: tuple[str, ...]

    def score(self, text: str) -> dict[str, float]:
        """Category -> 100 * (words of the text in the category) / (words of the text); zeros for no words."""
        ...


class EmpathLexicon:
    """Empath's 194 categories (shipped in the ``empath`` wheel), scored as percent of tokens."""

    name = "empath"

    def __init__(self) -> None:
        try:
            from empath import Empath
        except ImportError as e:
            raise ConfigError("The Empath lexicon needs the 'empath' package: pip install 'segue[delivery]'.") from e
        cats = Empath().cats  # category -> word list, read from the wheel's data/categories.tsv
        self.categories = tuple(sorted(cats))
        self._inv: dict[str, list[str]] = {}
        for c in self.categories:
            for w in set(cats[c]):
                self._inv.setdefault(w.lower(), []).append(c)

    def score(self, text: str) -> dict[str, float]:
        """Percent of the text's lower-cased word tokens in each category (Empath's own ``analyze`` splits on
        whitespace without lower-casing, so "Sorry," would miss; segue tokenises like :class:`DicLexicon`)."""
        toks = _TOKEN.findall((text or "").lower())
        counts = dict.fromkeys(self.categories, 0)
        for t in toks:
            for c in self._inv.get(t, ()):
                counts[c] += 1
        n = len(toks)
        return {c: (100.0 * v / n if n else 0.0) for c, v in counts.items()}


class DicLexicon:
    """A LIWC-format ``.dic`` dictionary (e.g. a licensed LIWC2015 file), scored as percent of words."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        try:
            lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError as e:
            raise DataError(f"Lexicon file {p} does not exist.") from e
        marks = [i for i, ln in enumerate(lines) if ln.strip() == "%"]
        if len(marks) < 2:
            raise DataError(f"{p} is not a LIWC .dic file: it needs a category table between two '%' lines.")
        ids: dict[str, str] = {}
        for ln in lines[marks[0] + 1 : marks[1]]:
            parts = ln.split()
            if len(parts) >= 2:
                ids[parts[0]] = parts[1]
        if not ids:
            raise DataError(f"{p} declares no categories between its '%' lines.")
        self.name = f"dic:{p.name}"
        self.categories = tuple(dict.fromkeys(ids.values()))
        self._exact: dict[str, set[str]] = {}
        self._prefix: dict[str, set[str]] = {}
        for n, ln in enumerate(lines[marks[1] + 1 :], start=marks[1] + 2):
            parts = ln.split()
            if not parts:
                continue
            word, cats = parts[0].lower(), parts[1:]
            unknown = [c for c in cats if c not in ids]
            if unknown:
                raise DataError(
                    f"{p} line {n} uses category id {unknown[0]!r}, which the category table does not declare."
                )
            target = self._prefix if word.endswith("*") else self._exact
            target.setdefault(word.rstrip("*"), set()).update(ids[c] for c in cats)
        self._max_prefix = max((len(k) for k in self._prefix), default=0)

    def _cats(self, tok: str) -> set[str]:
        if tok in self._exact:
            return self._exact[tok]
        for n in range(min(len(tok), self._max_prefix), 0, -1):  # longest wildcard stem wins, as in LIWC
            hit = self._prefix.get(tok[:n])
            if hit is not None:
                return hit
        return set()

    def score(self, text: str) -> dict[str, float]:
        toks = _TOKEN.findall((text or "").lower())
        counts = dict.fromkeys(self.categories, 0)
        for t in toks:
            for c in self._cats(t):
                counts[c] += 1
        n = len(toks)
        return {c: (100.0 * v / n if n else 0.0) for c, v in counts.items()}


def get_lexicon(spec: str | None) -> Lexicon | None:
    """``"empath"`` (default), a path to a LIWC ``.dic`` file, or ``"none"`` (no linguistic features)."""
    if spec is None or spec == "empath":
        return EmpathLexicon()
    if spec == "none":
        return None
    if spec.endswith(".dic") or Path(spec).is_file():
        return DicLexicon(spec)
    raise ConfigError(f"Unknown lexicon {spec!r}; use 'empath', 'none' or the path of a LIWC-format .dic file.")
