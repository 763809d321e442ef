"""Turn a free-form query into the noun phrases a detector can ground, and fit phrases to a model's text limit.

``"segment the red car"`` -> ``["red car"]``; ``"find the dog and the two children"`` -> ``["dog", "children"]``
(counts are dropped: detectors find every instance anyway); ``["a cat", "a dog"]`` -> ``["cat", "dog"]``.
Next to each phrase the parser keeps the query's own words for it (``"the two children"`` for ``children``):
that is what a result's ``ObjectMask.phrase`` holds, so a ``{phrase}`` caption names each object the way the
query did. The full query is kept too, as typed.

Text is normalised before it is split: Unicode NFC (a letter and its combining accent become one character,
as the tokenizers expect), control characters (NUL included) become spaces, and invisible formatting
characters (zero-width space, BOM, bidirectional marks, soft hyphen) are removed. A piece that holds no
letter, digit or symbol (emoji count as symbols) names nothing and is dropped.

Text encoders read a bounded number of tokens (OWLv2 16 per phrase, CLIP 77, SAM 3 32, Grounding DINO 256
for all phrases together). :class:`TextLimit` fits each phrase into such a limit: a phrase that is too long
is cut to its longest prefix that fits (at a word boundary when there is one), with a warning naming the
phrase, the model and the limit; it never reaches the model as a tensor-size error.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from segvlm.errors import QueryError

# Leading verbs that turn a phrase into an instruction ("segment the ...", "please track all ...").
_COMMAND = re.compile(
    r"^(?:please\s+)?(?:can you\s+)?(?:segment|track|find|detect|locate|show(?:\s+me)?|mask|highlight|"
    r"follow|get|select|label|annotate|outline|count)\b\s*",
    re.IGNORECASE,
)
_DETERMINERS = (
    r"the|a|an|all|every|each|any|some|those|these|this|that|both|of|"
    r"one|two|three|four|five|six|seven|eight|nine|ten|\d+"
)
_DETERMINER = re.compile(rf"^(?:{_DETERMINERS})\b\s*", re.IGNORECASE)
# Separators between several objects in one query.
_SPLIT = re.compile(r"\s*(?:,|;|\band\b|\bor\b|\bplus\b|\bas well as\b|&|\.)\s*", re.IGNORECASE)
_NUMBER_WORDS = {"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "both", "all"}
# Formatting characters that render as nothing. Zero-width joiners (emoji sequences, Indic and Persian
# scripts) are kept: they change how the text reads.
_INVISIBLE = dict.fromkeys(
    map(ord, "\u00ad\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064"),
)
_INVISIBLE.update(dict.fromkeys(range(0x2066, 0x206A)))
_INVISIBLE[0xFEFF] = None
# How many truncated phrases a warning lists by name.
_WARN_LISTED = 3


@dataclass(frozen=True)
class ParsedQuery:
    """A query and the noun phrases to ground.

    Attributes:
        text: the query as given (a list is joined with ", "), stripped of surrounding whitespace.
        phrases: the noun phrases, deduplicated, in order of appearance.
        sources: for each phrase, the query's own words for it (``"the two children"`` for ``"children"``),
            whitespace collapsed; what a result's ``ObjectMask.phrase`` holds.
    """

    text: str
    phrases: tuple[str, ...]
    sources: tuple[str, ...] = ()

    def source(self, phrase: str) -> str:
        """The query's own words for ``phrase``; the phrase itself when the query does not name it."""
        for known, source in zip(self.phrases, self.sources):
            if known == phrase:
                return source
        return phrase


def normalise_text(text: str) -> str:
    """NFC, control characters as spaces, invisible formatting characters removed (see the module docstring)."""
    text = "".join(" " if unicodedata.category(char) == "Cc" else char for char in text)
    return unicodedata.normalize("NFC", text.translate(_INVISIBLE))


def _names_something(phrase: str) -> bool:
    """True when the phrase holds a letter, a digit or a symbol (an emoji); punctuation or marks alone do not."""
    return any(unicodedata.category(char)[0] in "LNS" for char in phrase)


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _clean_source(part: str) -> str:
    """The query's words for one piece: quotes, surrounding punctuation and extra whitespace removed."""
    return _collapse(part.strip().strip("\"'`").strip()).strip(" .,;:!?")


def _clean_phrase(phrase: str) -> str:
    phrase = phrase.strip().strip("\"'`").strip()
    previous = None
    while previous != phrase:
        previous = phrase
        phrase = _DETERMINER.sub("", phrase).strip()
    return _collapse(phrase).strip(" .,;:!?")


def parse_query(query: str | list[str] | tuple[str, ...]) -> ParsedQuery:
    """Split a query into noun phrases; a clear :class:`QueryError` for one that names nothing.

    A list or tuple is taken as phrases already (only determiners are stripped), so callers that want
    exact control ("the red car and the blue bike" as one phrase) pass a list. Any Unicode string is
    accepted: the only error is a query with no phrase in it.
    """
    if isinstance(query, (list, tuple)):
        parts = [_collapse(normalise_text(str(item))) for item in query]
        text = ", ".join(str(item).strip() for item in query)
    elif isinstance(query, str):
        text = query.strip()
        # Whitespace runs are collapsed first: the separators' \s* would otherwise rescan a long run quadratically.
        body = _COMMAND.sub("", _collapse(normalise_text(text))).strip()
        parts = _SPLIT.split(body)
    else:
        raise QueryError(f"the query must be a string or a list of strings, got {type(query).__name__}")
    phrases: list[str] = []
    sources: list[str] = []
    for part in parts:
        cleaned = _clean_phrase(part)
        if not _names_something(cleaned) or cleaned.lower() in _NUMBER_WORDS or cleaned in phrases:
            continue
        phrases.append(cleaned)
        sources.append(_clean_source(part) or cleaned)
    if not phrases:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise QueryError(
            f"the query {shown!r} names nothing to segment; give a phrase such as 'the red car' or a list of "
            "phrases such as ['person', 'dog']"
        )
    return ParsedQuery(text=text, phrases=tuple(phrases), sources=tuple(sources))


@functools.lru_cache(maxsize=64)
def _sources(query: str, phrases: tuple[str, ...]) -> tuple[str, ...]:
    try:
        parsed = parse_query(query)
    except QueryError:
        parsed = None
    known: dict[str, str] = {}
    if parsed is not None:
        for phrase, source in zip(parsed.phrases, parsed.sources):
            known.setdefault(phrase.casefold(), source)
    text = _collapse(normalise_text(query))
    found = []
    for phrase in phrases:
        source = known.get(phrase.casefold())
        if source is None:  # e.g. a list item that itself holds "and": find the phrase in the text
            words = r"\s+".join(re.escape(word) for word in phrase.split())
            pattern = rf"(?<!\w)(?:(?:{_DETERMINERS})\s+)*{words}(?!\w)"
            match = re.search(pattern, text, re.IGNORECASE) if words else None
            source = _collapse(match.group(0)) if match else phrase
        found.append(source)
    return tuple(found)


def source_phrases(query: str, phrases: Sequence[str]) -> tuple[str, ...]:
    """For each grounded ``phrase``, the query's own words for it (``"the two children"`` for ``"children"``).

    This is what grounders put in ``Detection.phrase``. A phrase the query does not contain (or an empty
    query) gives the phrase itself.
    """
    return _sources(query or "", tuple(phrases))


@dataclass(frozen=True)
class FittedPhrase:
    """A phrase as a text encoder will read it.

    Attributes:
        phrase: the phrase as given.
        text: what the model reads: the phrase, or its longest prefix that fits the limit.
    """

    phrase: str
    text: str

    @property
    def truncated(self) -> bool:
        return self.text != self.phrase


class TextLimit:
    """Fits phrases into a text encoder's token limit; warns once for each set of phrases it had to cut.

    Args:
        model: the model's name, used in messages (``"OWLv2"``).
        limit: the most tokens the encoder reads, special tokens included.
        count_tokens: tokens that the encoder spends on a phrase (prompt template and special tokens
            included), as its own tokenizer counts them.
        what: what the limit applies to, for messages (``"per phrase"``).
    """

    def __init__(self, model: str, limit: int, count_tokens: Callable[[str], int], what: str = "per phrase"):
        self.model = model
        self.limit = int(limit)
        self.count_tokens = count_tokens
        self.what = what
        self._fitted: dict[tuple[str, ...], tuple[FittedPhrase, ...]] = {}

    def fits(self, text: str) -> bool:
        return self.count_tokens(text) <= self.limit

    def fit_one(self, phrase: str) -> FittedPhrase:
        """The phrase, or its longest prefix that fits (cut at a word boundary when the prefix has one).

        Raises :class:`QueryError` when not even the first character fits (a limit that the prompt template
        alone uses up).
        """
        if self.fits(phrase):
            return FittedPhrase(phrase, phrase)
        low, high = 0, len(phrase)  # phrase[:low] fits (or low == 0), phrase[:high] does not
        while high - low > 1:
            middle = (low + high) // 2
            if self.fits(phrase[:middle]):
                low = middle
            else:
                high = middle
        prefix = phrase[:low]
        candidates = [prefix.rstrip()]
        half_word = low and not prefix[-1].isspace() and not phrase[low].isspace()
        if half_word and re.search(r"\s", prefix.strip()):
            candidates.insert(0, re.split(r"\s+(?=\S*$)", prefix.rstrip())[0].rstrip())  # no half-cut word
        for text in candidates:
            if text and self.fits(text):
                return FittedPhrase(phrase, text)
        raise QueryError(
            f"{self.model} reads at most {self.limit} text tokens {self.what}, and not even the start of "
            f"{_shorten(phrase)!r} fits; use a model with a longer text limit"
        )

    def fit(self, phrases: Sequence[str]) -> tuple[FittedPhrase, ...]:
        """Every phrase fitted to the limit; a ``UserWarning`` names the ones that were cut (once per set)."""
        key = tuple(phrases)
        fitted = self._fitted.get(key)
        if fitted is None:
            fitted = tuple(self.fit_one(phrase) for phrase in key)
            if len(self._fitted) >= 64:
                self._fitted.clear()
            self._fitted[key] = fitted
            cut = [item for item in fitted if item.truncated]
            if cut:
                warnings.warn(self._message(cut), UserWarning, stacklevel=3)
        return fitted

    def _message(self, cut: list[FittedPhrase]) -> str:
        listed = "; ".join(f"{_shorten(item.phrase)!r} -> {item.text!r}" for item in cut[:_WARN_LISTED])
        more = f" and {len(cut) - _WARN_LISTED} more" if len(cut) > _WARN_LISTED else ""
        return (
            f"{self.model} reads at most {self.limit} text tokens {self.what}; {len(cut)} phrase(s) were "
            f"truncated to fit: {listed}{more}. Shorten the phrases (split a long query with commas or 'and') "
            "so that the words that matter come first"
        )


def _shorten(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."
