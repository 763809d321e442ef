"""Turn a free-form query into the noun phrases a detector can ground.

``"segment the red car"`` -> ``["red car"]``; ``"find the dog and the two children"`` -> ``["dog", "children"]``
(counts are dropped: detectors find every instance anyway); ``["a cat", "a dog"]`` -> ``["cat", "dog"]``.
The full query is kept next to the phrases so that a re-ranker can score candidates against it: it is the
full phrase that carries attributes ("the red car on the left").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from segvlm.errors import QueryError

# Leading verbs that turn a phrase into an instruction ("segment the ...", "please track all ...").
_COMMAND = re.compile(
    r"^(?:please\s+)?(?:can you\s+)?(?:segment|track|find|detect|locate|show(?:\s+me)?|mask|highlight|"
    r"follow|get|select|label|annotate|outline|count)\b\s*",
    re.IGNORECASE,
)
_DETERMINER = re.compile(
    r"^(?:the|a|an|all|every|each|any|some|those|these|this|that|both|of|"
    r"one|two|three|four|five|six|seven|eight|nine|ten|\d+)\b\s*",
    re.IGNORECASE,
)
# Separators between several objects in one query.
_SPLIT = re.compile(r"\s*(?:,|;|\band\b|\bor\b|\bplus\b|\bas well as\b|&|\.)\s*", re.IGNORECASE)
_NUMBER_WORDS = {"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "both", "all"}


@dataclass(frozen=True)
class ParsedQuery:
    """A query and the noun phrases to ground.

    Attributes:
        text: the query as given (a list is joined with ", ").
        phrases: the noun phrases, deduplicated, in order of appearance.
    """

    text: str
    phrases: tuple[str, ...]


def _clean_phrase(phrase: str) -> str:
    phrase = phrase.strip().strip("\"'`").strip()
    previous = None
    while previous != phrase:
        previous = phrase
        phrase = _DETERMINER.sub("", phrase).strip()
    return re.sub(r"\s+", " ", phrase).strip(" .,;:!?")


def parse_query(query: str | list[str] | tuple[str, ...]) -> ParsedQuery:
    """Split a query into noun phrases; a clear :class:`QueryError` for an empty one.

    A list or tuple is taken as phrases already (only determiners are stripped), so callers that want
    exact control ("the red car and the blue bike" as one phrase) pass a list.
    """
    if isinstance(query, (list, tuple)):
        parts = [str(item) for item in query]
        text = ", ".join(part.strip() for part in parts)
    elif isinstance(query, str):
        text = query.strip()
        body = _COMMAND.sub("", text).strip()
        parts = _SPLIT.split(body)
    else:
        raise QueryError(f"the query must be a string or a list of strings, got {type(query).__name__}")
    phrases: list[str] = []
    for part in parts:
        cleaned = _clean_phrase(part)
        if cleaned and cleaned.lower() not in _NUMBER_WORDS and cleaned not in phrases:
            phrases.append(cleaned)
    if not phrases:
        raise QueryError(
            f"the query {text!r} names nothing to segment; give a phrase such as 'the red car' or a list of "
            "phrases such as ['person', 'dog']"
        )
    return ParsedQuery(text=text, phrases=tuple(phrases))
