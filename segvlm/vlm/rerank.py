"""VLM-assisted referring expressions: which of these candidate regions does the text mean?

After grounding proposes several boxes or masks for "the man on the left holding a cup", the candidates
are drawn as numbered marks (Set-of-Mark) and the VLM is asked for the number. Its answer is parsed; when
it names no valid candidate, the candidate whose number token the model scores highest is taken.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from segvlm.masktok.regions import region_masks
from segvlm.masktok.visual_prompt import draw_marks

_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
DEFAULT_QUESTION = (
    "The image shows {n} numbered regions. Which region is {expression}? Answer with the region number only."
)


@dataclass(frozen=True)
class RerankChoice:
    """The re-ranker's decision.

    Attributes:
        index: 0-based index of the chosen candidate.
        answer: the VLM's raw answer.
        parsed: True when the answer named a valid number; False when the number-token scores decided.
    """

    index: int
    answer: str
    parsed: bool


def parse_choice(answer: str, num_candidates: int) -> int | None:
    """The first number 1..num_candidates in ``answer`` (digits or a word), as a 0-based index, else None."""
    for token in re.findall(r"\d+|[A-Za-z]+", answer):
        value = int(token) if token.isdigit() else _WORDS.get(token.lower())
        if value is not None and 1 <= value <= num_candidates:
            return value - 1
    return None


class VLMReferringReranker:
    """Pick the candidate region a referring expression means, by asking a VLM about numbered marks.

    Args:
        vlm: a :class:`segvlm.vlm.MaskAwareVLM` (any design; the marks are drawn here, no regions are passed).
        style: mark style (``"alpha"``, ``"contour"``, ``"number"``).
        max_candidates: at most this many candidates (numbers stay legible).
        question: the prompt; ``{n}`` is the number of candidates, ``{expression}`` the expression.
        max_new_tokens: answer length.
    """

    def __init__(
        self,
        vlm: Any,
        style: str = "alpha",
        max_candidates: int = 9,
        question: str = DEFAULT_QUESTION,
        max_new_tokens: int = 8,
    ):
        self.vlm, self.style, self.max_candidates = vlm, style, max_candidates
        self.question, self.max_new_tokens = question, max_new_tokens

    def choose(self, image, candidates: Sequence[Any], expression: str) -> int:
        """0-based index of the candidate (masks, RLE, ObjectMask, Detection or xyxy boxes) meant."""
        return self.choose_with_answer(image, candidates, expression).index

    def choose_with_answer(self, image, candidates: Sequence[Any], expression: str) -> RerankChoice:
        if len(candidates) == 0:
            raise ValueError("no candidate regions to choose from; run grounding first or pass at least one region")
        masks = region_masks([image], [list(candidates)], self.max_candidates)[0]
        if len(masks) == 1:
            return RerankChoice(index=0, answer="", parsed=False)
        marked = draw_marks(image, masks, style=self.style)
        prompt = self.question.format(n=len(masks), expression=expression)
        answer = self.vlm.generate([marked], [[]], prompt, max_new_tokens=self.max_new_tokens)[0]
        index = parse_choice(answer, len(masks))
        if index is not None:
            return RerankChoice(index=index, answer=answer, parsed=True)
        return RerankChoice(index=self._score_numbers(marked, prompt, len(masks)), answer=answer, parsed=False)

    def _score_numbers(self, marked, prompt: str, n: int) -> int:
        """The number whose first token has the highest next-token logit after the prompt."""
        with torch.no_grad():
            logits = self.vlm.logits([marked], [[]], prompt)[0, -1]  # (V,)
        ids = [self.vlm.tokenizer.encode(str(k + 1), add_special_tokens=False)[0] for k in range(n)]
        return int(torch.argmax(logits[ids]).item())
