"""Referring-expression re-ranking and describe() on a segmentation result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segvlm.masks import RLE
from segvlm.testing.vlm import tiny_model_dir
from segvlm.types import FrameResult, ObjectMask, VideoInfo, VideoSegmentation
from segvlm.vlm import MaskAwareVLM, VLMReferringReranker, describe, parse_choice

W, H = 64, 48


def _mask(x0, x1) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[10:40, x0:x1] = True
    return mask


class ScriptedVLM:
    """Answers with a fixed text and records what it was shown."""

    def __init__(self, answer: str):
        self.answer, self.calls = answer, []

    def generate(self, images, regions, prompt, max_new_tokens=8):
        self.calls.append((images, regions, prompt))
        return [self.answer]


def test_parse_choice():
    assert parse_choice("Region 2.", 3) == 1
    assert parse_choice("It is number three", 3) == 2
    assert parse_choice("7 then 1", 3) == 0
    assert parse_choice("none", 3) is None


def test_reranker_returns_the_number_the_vlm_names():
    vlm = ScriptedVLM("The answer is 3")
    image = Image.new("RGB", (W, H), (100, 100, 100))
    candidates = [_mask(0, 10), _mask(20, 30), (45, 10, 60, 40)]
    assert VLMReferringReranker(vlm).choose(image, candidates, "the box on the right") == 2
    (marked,), regions, prompt = vlm.calls[0]
    assert regions == [[]] and "the box on the right" in prompt and "3 numbered regions" in prompt
    assert np.asarray(marked)[20, 50].tolist() != [100, 100, 100]  # the candidates were drawn


def test_reranker_errors_and_single_candidate():
    image = Image.new("RGB", (W, H))
    with pytest.raises(ValueError, match="no candidate regions"):
        VLMReferringReranker(ScriptedVLM("1")).choose(image, [], "x")
    vlm = ScriptedVLM("2")
    assert VLMReferringReranker(vlm).choose(image, [_mask(0, 10)], "x") == 0 and not vlm.calls


def test_reranker_on_a_tiny_vlm_falls_back_to_number_scores():
    vlm = MaskAwareVLM.from_pretrained(tiny_model_dir("smolvlm"), mask_tokenizer="set_of_mark")
    image = Image.new("RGB", (W, H), (90, 120, 60))
    reranker = VLMReferringReranker(vlm, max_new_tokens=2)
    choice = reranker.choose_with_answer(image, [_mask(0, 20), _mask(30, 50)], "the left one")
    assert choice.index in (0, 1)
    if not choice.parsed:  # random weights rarely answer a number: the scores decide, deterministically
        assert reranker.choose(image, [_mask(0, 20), _mask(30, 50)], "the left one") == choice.index


def _result(source: str = "<frames>") -> VideoSegmentation:
    objects = [
        ObjectMask(
            track_id=t, label="cup", phrase="a cup", score=0.9, box_xyxy=RLE.encode(m).bbox_xyxy(), rle=RLE.encode(m)
        )
        for t, m in ((3, _mask(0, 20)), (5, _mask(30, 50)))
    ]
    frames = [FrameResult(frame_index=i, height=H, width=W, objects=objects if i == 2 else []) for i in range(4)]
    return VideoSegmentation(
        info=VideoInfo(source=source, height=H, width=W), query="cup", phrases=["cup"], frames=frames
    )


def test_describe_passes_the_object_mask_and_question():
    vlm = ScriptedVLM("drinking")
    image = Image.new("RGB", (W, H))
    assert describe(_result(), 3, 2, "What is it doing?", vlm, image=image) == "drinking"
    _, regions, prompt = vlm.calls[0]
    assert np.array_equal(regions[0][0].decode(), _mask(0, 20))
    assert prompt == "Object 3 is {region1}. What is it doing?"


def test_describe_errors_name_the_fix():
    image = Image.new("RGB", (W, H))
    with pytest.raises(KeyError, match=r"objects there: \[3, 5\]"):
        describe(_result(), 4, 2, "?", ScriptedVLM(""), image=image)
    with pytest.raises(ValueError, match="pass image= or video="):
        describe(_result(), 3, 2, "?", ScriptedVLM(""))
    with pytest.raises(ValueError, match="segmented at 64x48"):
        describe(_result(), 3, 2, "?", ScriptedVLM(""), image=Image.new("RGB", (32, 32)))


def test_describe_reads_the_frame_from_the_video(tmp_path):
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for value in (0, 60, 250, 120):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), value, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    vlm = ScriptedVLM("ok")
    describe(_result(str(path)), 5, 2, "What?", vlm)
    (image,), _, _ = vlm.calls[0]
    assert abs(int(np.asarray(image).mean()) - 250) < 8  # frame 2 is the bright one


def test_describe_runs_on_a_tiny_pooled_vlm():
    vlm = MaskAwareVLM.from_pretrained(tiny_model_dir("smolvlm"), mask_tokenizer="pooled")
    with torch.no_grad():
        answer = describe(_result(), 5, 2, "What is it doing?", vlm, image=Image.new("RGB", (W, H)), max_new_tokens=3)
    assert isinstance(answer, str)
