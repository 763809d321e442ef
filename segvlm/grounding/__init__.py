"""Open-vocabulary grounding: phrases to boxes (OWLv2, Grounding DINO), and open_clip re-ranking."""

from segvlm.grounding.base import Grounder, postprocess_detections

__all__ = ["Grounder", "postprocess_detections"]
