"""Describe object 3 of a hand-built result through the 'set_of_mark' mask tokenizer on a tiny random SmolVLM.

Runs offline in seconds; with a real checkpoint pass its hub id instead of the tiny folder.
"""

import numpy as np
from masktok_common import scene, tiny_smolvlm

from segvlm.vlm import MaskAwareVLM, describe

result, image = scene()
vlm = MaskAwareVLM.from_pretrained(tiny_smolvlm(), mask_tokenizer="set_of_mark")
marked = vlm.mask_tokenizer.encode([image], [[result.frame(40).get(3).rle]]).images[0]
print("pixels changed by the mark:", int((np.asarray(marked) != np.asarray(image)).any(-1).sum()))
answer = describe(
    result, track_id=3, frame_index=40, question="What is object 3 doing?", vlm=vlm, image=image, max_new_tokens=4
)
print("design:", vlm.mask_tokenizer.design)
print("answer:", repr(answer))
