"""Describe an object of a pipeline result through the 'encoder' mask tokenizer on a tiny random SmolVLM.

Runs offline in seconds; with a real checkpoint pass its hub id instead of the tiny folder.
"""

from masktok_common import scene, tiny_smolvlm

from segvlm.vlm import MaskAwareVLM, describe

result, image, track_id, frame_index = scene()
vlm = MaskAwareVLM.from_pretrained(tiny_smolvlm(), mask_tokenizer="encoder")
tokens = vlm.mask_tokenizer.encode([image], [[result.frame(frame_index).get(track_id).rle]])
print("mask map shape:", tuple(tokens.encoder_masks.shape), "covered pixels:", int(tokens.encoder_masks.sum()))
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
