"""Describe object 3 of a hand-built result through the 'pooled' mask tokenizer on a tiny random SmolVLM.

Runs offline in seconds; with a real checkpoint pass its hub id instead of the tiny folder.
"""

from masktok_common import scene, tiny_smolvlm

from segvlm.vlm import MaskAwareVLM, describe

result, image = scene()
vlm = MaskAwareVLM.from_pretrained(tiny_smolvlm(), mask_tokenizer="pooled")
tokens = vlm.mask_tokenizer.encode([image], [[result.frame(40).get(3).rle]])
embeds = tokens.region_embeds[0]  # (2, D): feature token and shape token
print("region embedding shape:", tuple(embeds.shape), "norm at step 0:", float(embeds.norm()))
answer = describe(
    result, track_id=3, frame_index=40, question="What is object 3 doing?", vlm=vlm, image=image, max_new_tokens=4
)
print("design:", vlm.mask_tokenizer.design)
print("answer:", repr(answer))
