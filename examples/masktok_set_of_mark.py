"""Describe an object of a pipeline result through the 'set_of_mark' mask tokenizer on a tiny random SmolVLM.

Runs offline in seconds; with a real checkpoint pass its hub id instead of the tiny folder.
"""

import numpy as np
from masktok_common import scene, tiny_smolvlm

from segvlm.vlm import MaskAwareVLM, describe

result, image, track_id, frame_index = scene()
vlm = MaskAwareVLM.from_pretrained(tiny_smolvlm(), mask_tokenizer="set_of_mark")
marked = vlm.mask_tokenizer.encode([image], [[result.frame(frame_index).get(track_id).rle]]).images[0]
print("pixels changed by the mark:", int((np.asarray(marked) != np.asarray(image)).any(-1).sum()))
answer = describe(
    result,
    track_id=track_id,
    frame_index=frame_index,
    question="What is this object doing?",
    vlm=vlm,
    image=image,
    max_new_tokens=4,
)
print("design:", vlm.mask_tokenizer.design)
print("answer:", repr(answer))
