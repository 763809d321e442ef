"""Pick which of two candidate regions "the blue block" means, with numbered marks and a tiny random VLM."""

from masktok_common import scene, tiny_smolvlm

from segvlm.vlm import MaskAwareVLM, VLMReferringReranker

result, image, track_id, frame_index = scene()
candidates = [obj.rle for obj in result.frame(frame_index)]
vlm = MaskAwareVLM.from_pretrained(tiny_smolvlm(), mask_tokenizer="set_of_mark")
choice = VLMReferringReranker(vlm, max_new_tokens=3).choose_with_answer(image, candidates, "the blue block")
print("chosen index:", choice.index, "parsed from answer:", choice.parsed, "answer:", repr(choice.answer))
