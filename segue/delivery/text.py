"""Text helpers of chapter 3: reward-description tokens, sentence counts and the SMOG grade (spec B.3).

- :func:`reward_tokens`: lower-case, punctuation removed, stop words removed (gensim's English list),
  Porter-stemmed. [AMBIG] (spec B.3.1 step 1) stemming is not mentioned but the word clouds show stems
  ("websit", "copi"); spec choice: Porter stemming after lower-casing and stop-word removal.
- :func:`count_sentences`: a sentence ends at ``.``, ``!``, ``?`` or a line break; a segment counts
  when it has at least one letter or digit.
- :func:`smog`: [AMBIG] the text cites SMOG [60] without settings; the spec suggests
  ``textstat.smog_index``, but textstat (0.7.13) loads NLTK's cmudict at run time, which cannot be
  downloaded here, so segue computes McLaughlin's formula itself:
  ``SMOG = 1.0430 * sqrt(polysyllables * 30 / sentences) + 3.1291``, with polysyllables = words of
  three or more syllables, syllables counted by :func:`syllables` (vowel groups, a silent final "e"
  dropped). Text with no sentence scores 0.0. Unlike textstat it does not return 0 below 3 sentences.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

_SENT_SPLIT = re.compile(r"[.!?]+|\n+")
_ALNUM = re.compile(r"[A-Za-z0-9]")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_TOKEN = re.compile(r"[a-z0-9]+")
_VOWELS = re.compile(r"[aeiouy]+")


def count_sentences(text: str) -> int:
    """Number of sentences: segments between ``.``/``!``/``?``/line breaks that hold a letter or digit."""
    return sum(1 for seg in _SENT_SPLIT.split(text or "") if _ALNUM.search(seg))


def words(text: str) -> list[str]:
    """Alphabetic words (an inner apostrophe kept: ``don't``)."""
    return _WORD.findall(text or "")


def syllables(word: str) -> int:
    """Syllables of an English word: vowel groups (``y`` a vowel), minus a silent final ``e`` (not ``-le``); at least 1."""
    w = word.lower().replace("'", "")
    n = len(_VOWELS.findall(w))
    if n > 1 and w.endswith("e") and not w.endswith("le") and not w.endswith("ee"):
        n -= 1
    return max(n, 1)


def smog(text: str) -> float:
    """McLaughlin's SMOG grade: ``1.0430 * sqrt(polysyllables * 30 / sentences) + 3.1291`` (0.0 without sentences)."""
    n_sent = count_sentences(text)
    if n_sent == 0:
        return 0.0
    poly = sum(1 for w in words(text) if syllables(w) >= 3)
    return 1.0430 * math.sqrt(poly * 30.0 / n_sent) + 3.1291


@lru_cache(maxsize=1)
def _stop_and_stem():
    from gensim.parsing.porter import PorterStemmer
    from gensim.parsing.preprocessing import STOPWORDS

    return frozenset(STOPWORDS), PorterStemmer()


@lru_cache(maxsize=65536)
def _stem(tok: str) -> str:
    return _stop_and_stem()[1].stem(tok)


def reward_tokens(text: str) -> list[str]:
    """Reward-description tokens (spec B.3.1 step 1): lower-case, no punctuation, no stop words, Porter stems."""
    stop, _ = _stop_and_stem()
    return [_stem(t) for t in _TOKEN.findall((text or "").lower()) if t not in stop and not t.isdigit()]
