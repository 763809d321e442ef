"""Hostile input: text longer than the models read, strange Unicode, rotated photos, lists of paths and globs.

Text: every grounder (OWLv2, Grounding DINO), the CLIP re-ranker and SAM 3's text path take a query of 1,000
words, a single 500-character phrase, 120 comma-separated phrases and Unicode oddities without a tensor-size
error, and say in a warning when they had to cut a phrase. Photos: a JPEG whose EXIF orientation is 6 or 8 is
segmented as every viewer shows it, and so are the rows and imports built from it.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import segvlm
from segvlm.config import GrounderConfig, PipelineConfig, RerankerConfig, SegmenterConfig
from segvlm.errors import QueryError, VideoReadError
from segvlm.grounding.grounding_dino import build_prompt
from segvlm.grounding.rerank import ClipReranker
from segvlm.masks import RLE, mask_iou
from segvlm.query import TextLimit, parse_query, source_phrases
from segvlm.registry import grounder_class
from segvlm.segmentation.base import FrameMasks, SegmenterSession, VideoSegmenter
from segvlm.segmentation.sam3 import Sam3VideoSegmenter
from segvlm.testing.models import SAM3_ANCHOR_PHRASES
from segvlm.types import Detection
from segvlm.video import read_frames

IMAGE = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)

THOUSAND_WORDS = " ".join(f"word{i}" for i in range(1000))
LONG_PHRASE = ("big red car parked near the old house with a blue door " * 10)[:500].strip()
MANY_PHRASES = ", ".join(f"thing{i}" for i in range(120))  # several Grounding DINO prompts
UNICODE = {
    "emoji": "the 🐶 and the 👨\u200d👩\u200d👧 family",
    "cjk": "红色的汽车 and 猫",
    "rtl": "\u05d4\u05db\u05dc\u05d1 and \u0627\u0644\u0642\u0637\u0629",  # Hebrew "the dog", Arabic "the cat"
    "combining": "cafe\u0301 and n\u0303o",
    "zero-width": "the do\u200bg and the \ufeffcat\u200f",
    "nul": "the dog\x00 and the\x00cat",
}
QUERIES = {"1000 words": THOUSAND_WORDS, "500-char phrase": LONG_PHRASE, "120 phrases": MANY_PHRASES, **UNICODE}


# -- query parsing ------------------------------------------------------------------------------------------


def test_long_queries_parse_into_phrases_and_keep_their_words():
    assert len(LONG_PHRASE) == 500
    assert parse_query(THOUSAND_WORDS).phrases == (THOUSAND_WORDS,)
    assert parse_query(LONG_PHRASE).phrases == (LONG_PHRASE,)
    many = parse_query(MANY_PHRASES)
    assert many.phrases == tuple(f"thing{i}" for i in range(120)) and many.sources == many.phrases


def test_long_whitespace_runs_parse_in_linear_time():
    import time

    query = "the dog" + " \t\n" * 100_000 + "and the cat" + "\u200b " * 100_000
    started = time.perf_counter()
    parsed = parse_query(query)
    assert parsed.phrases == ("dog", "cat") and source_phrases(query, ["zebra"]) == ("zebra",)
    assert time.perf_counter() - started < 2.0  # a quadratic split takes minutes here


@pytest.mark.parametrize(
    ("name", "phrases"),
    [
        ("emoji", ("🐶", "👨\u200d👩\u200d👧 family")),  # the zero-width joiners of an emoji sequence stay
        ("cjk", ("红色的汽车", "猫")),
        ("rtl", ("\u05d4\u05db\u05dc\u05d1", "\u0627\u0644\u0642\u0637\u0629")),
        ("combining", ("café", "ño")),  # NFC: one character per accented letter
        ("zero-width", ("dog", "cat")),  # zero-width space, BOM and bidi marks are removed
        ("nul", ("dog", "cat")),  # control characters are spaces
    ],
)
def test_unicode_queries_are_normalised(name, phrases):
    assert parse_query(UNICODE[name]).phrases == phrases


@pytest.mark.parametrize("query", ["\u200b\u200b", "\x00\x00", "!!! ???", "\u0301", "the, a, an"])
def test_queries_of_invisible_or_punctuation_characters_name_nothing(query):
    with pytest.raises(QueryError, match="names nothing to segment"):
        parse_query(query)


def test_source_phrases_are_the_query_words_for_each_label():
    query = "find the dog and the two children"
    assert source_phrases(query, ["dog", "children"]) == ("the dog", "the two children")
    assert parse_query(["a cat", "the red car and the blue bike"]).sources == ("a cat", "the red car and the blue bike")
    # a list item that itself holds "and" is found in the query text with its determiner
    assert source_phrases("a cat, the red car and the blue bike", ["red car and the blue bike"]) == (
        "the red car and the blue bike",
    )
    assert source_phrases("", ["dog"]) == ("dog",) and source_phrases("the cat", ["zebra"]) == ("zebra",)


def test_text_limit_cuts_at_a_word_boundary_and_refuses_what_cannot_fit():
    limit = TextLimit("Toy", 5, lambda text: len(text.split()) + len(text) // 100)
    with pytest.warns(UserWarning, match=r"Toy reads at most 5 text tokens per phrase; 1 phrase\(s\) were truncated"):
        fitted = limit.fit(["one two three four five six seven", "short"])
    assert [item.text for item in fitted] == ["one two three four five", "short"]
    assert fitted[0].truncated and not fitted[1].truncated
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same phrases again: no second warning
        limit.fit(["one two three four five six seven", "short"])
    impossible = TextLimit("Toy", 1, lambda text: 2 + len(text))
    with pytest.raises(QueryError, match="Toy reads at most 1 text tokens per phrase"):
        impossible.fit_one("x")


# -- grounders, re-ranker, SAM 3 ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["owlv2", "grounding-dino"])
def grounder(request):
    config = GrounderConfig(name=request.param, model=f"tiny-random:{request.param}", box_threshold=0.0, top_k=2)
    return grounder_class(request.param).from_config(config)


@pytest.fixture
def reranker():
    """A fresh re-ranker per test: each warns once per set of phrases."""
    return ClipReranker.from_config(RerankerConfig(enabled=True, model="tiny-random:clip", weight=0.5))


@pytest.mark.parametrize("name", list(QUERIES))
def test_grounders_and_the_reranker_take_any_query(grounder, reranker, name):
    parsed = parse_query(QUERIES[name])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detections = grounder.detect(IMAGE, parsed.phrases, parsed.text)
        reranked = reranker.rerank(IMAGE, detections)
    assert detections, "with threshold 0 the detector proposes boxes"
    assert {d.label for d in detections} <= set(parsed.phrases)
    assert all(d.phrase == parsed.source(d.label) for d in detections)
    assert len(reranked) == len(detections) and all(0.0 <= d.score <= 1.0 for d in reranked)
    model = {"owlv2": "OWLv2", "grounding-dino": "Grounding DINO"}[grounder.config.name]
    text_limit = grounder.text_limit
    cut = [str(w.message) for w in caught if str(w.message).startswith(f"{model} reads at most {text_limit.limit}")]
    too_long = [phrase for phrase in parsed.phrases if text_limit.count_tokens(phrase) > text_limit.limit]
    assert bool(cut) == bool(too_long)  # a warning exactly when a phrase had to be cut (CJK costs several tokens)
    if name not in UNICODE:  # (a CJK phrase may or may not fit, depending on the tokenizer)
        assert bool(too_long) == (name in ("1000 words", "500-char phrase"))
    if too_long:
        assert all(phrase[:20] in cut[0] for phrase in too_long[:3])  # the warning names the phrases it cut
    if name in ("1000 words", "500-char phrase"):
        assert any("CLIP reads at most 16 text tokens" in str(w.message) for w in caught)
    for fitted in text_limit.fit(parsed.phrases):  # what the model read fits its limit, and starts the phrase
        assert text_limit.count_tokens(fitted.text) <= text_limit.limit and fitted.phrase.startswith(fitted.text)


def test_grounding_dino_splits_many_phrases_over_prompts_that_fit():
    config = GrounderConfig(name="grounding-dino", model="tiny-random:grounding-dino", box_threshold=0.0)
    grounder = grounder_class("grounding-dino").from_config(config)
    texts = [f"thing{i}" for i in range(300)]
    groups = grounder.prompt_groups(texts)
    assert len(groups) > 1 and [i for group in groups for i in group] == list(range(300))
    prompts = [build_prompt([texts[i] for i in group])[0] for group in groups]
    assert all(grounder.prompt_tokens(prompt) <= grounder.max_tokens for prompt in prompts)


@pytest.fixture(scope="module")
def sam3():
    return Sam3VideoSegmenter.from_config(SegmenterConfig(name="sam3", model="tiny-random:sam3", dtype="float32"))


@pytest.mark.parametrize("name", ["1000 words", "500-char phrase", "emoji", "cjk", "rtl", "nul"])
def test_sam3_text_path_takes_long_and_strange_phrases(sam3, name, monkeypatch):
    # Every phrase is tokenized, encoded and run through the detector; keeping no detection saves tracking the
    # random model's objects (labelling is checked below, on the phrase the tiny model finds).
    monkeypatch.setattr(sam3.model, "score_threshold_detection", 1.01)
    parsed = parse_query(QUERIES[name])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = sam3.start_text(90, 160, parsed.phrases)
        output = session.step(IMAGE)
    assert output.obj_ids == [] and output.masks.shape == (0, 90, 160)
    assert len(session.session.prompt_embeddings) == len(parsed.phrases)  # the text encoder read every phrase
    cut = [str(w.message) for w in caught if "SAM 3 reads at most 32 text tokens per phrase" in str(w.message)]
    assert bool(cut) == (name in ("1000 words", "500-char phrase"))


def test_sam3_labels_objects_with_the_phrase_as_given_even_when_it_was_cut(sam3):
    found = SAM3_ANCHOR_PHRASES[0]  # the tiny model finds this phrase everywhere
    long = f"{found} " + "thing " * 100
    with pytest.warns(UserWarning, match="SAM 3 reads at most 32"):
        output = sam3.start_text(90, 160, [long.strip()]).step(IMAGE)
    assert output.obj_ids and set(output.labels) == {long.strip()}


def test_sam3_encodes_300_phrases(sam3):
    """All 300 prompts go through SAM 3's text encoder (a whole frame would run its detector 300 times)."""
    import torch

    parsed = parse_query(", ".join(f"thing{i}" for i in range(300)))
    session = sam3.start_text(90, 160, parsed.phrases).session
    assert sorted(session.prompts.values()) == sorted(parsed.phrases)
    input_ids = torch.cat(list(session.prompt_input_ids.values()))  # (300, 32)
    attention = torch.cat(list(session.prompt_attention_masks.values()))
    assert input_ids.shape == (300, 32)
    with torch.inference_mode():
        features = sam3.model.detector_model.get_text_features(
            input_ids=input_ids, attention_mask=attention, return_dict=True
        )
    assert features.last_hidden_state.shape[:2] == (300, 32)


def test_pipelines_take_a_thousand_word_query(tiny, sam3):
    with pytest.warns(UserWarning, match="OWLv2 reads at most 16 text tokens per phrase"):
        result = tiny(THOUSAND_WORDS, [IMAGE, IMAGE])
    assert len(result) == 2 and result.phrases == [THOUSAND_WORDS]
    assert all(obj.label == THOUSAND_WORDS and obj.phrase == THOUSAND_WORDS for frame in result for obj in frame)
    text_native = segvlm.Pipeline(PipelineConfig(device="cpu"), grounder=object(), segmenter=sam3)
    with pytest.warns(UserWarning, match="SAM 3 reads at most 32 text tokens per phrase"):
        result = text_native(" ".join([SAM3_ANCHOR_PHRASES[0]] + ["thing"] * 999), [IMAGE])  # 1,000 words
    assert result[0].objects and {obj.label for obj in result[0]} == set(result.phrases)
    assert len(result.phrases[0].split()) == 1000


# -- ObjectMask.phrase ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    with pytest.warns(UserWarning, match="random weights"):
        return segvlm.Pipeline.from_preset("tiny-random")


def test_object_phrases_are_the_query_words_for_their_label(tiny):
    from segvlm.data.schema import region_from_object

    query = "find the dog and the two children"
    expected = {"dog": "the dog", "children": "the two children"}
    for detection in tiny.grounder.detect(IMAGE, ["dog", "children"], query):
        assert detection.phrase == expected[detection.label]
    result = tiny(query, [IMAGE, IMAGE])
    objects = [obj for frame in result for obj in frame]
    assert objects and result.query == query
    for obj in objects:
        assert obj.phrase == expected[obj.label]
        region = region_from_object(obj, ["a photo of {phrase}"], "key")
        assert region.caption == f"a photo of {expected[obj.label]}"


# -- EXIF orientation ----------------------------------------------------------------------------------------

DISPLAYED = (60, 40)  # (H, W) as viewers show the photo: portrait
SQUARE = (slice(6, 26), slice(10, 30))  # rows, columns of the red square in the displayed image
STORED_FOR = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}  # undoes what the tag says


def displayed_image() -> np.ndarray:
    image = np.full((*DISPLAYED, 3), 128, np.uint8)
    image[SQUARE] = (230, 20, 20)
    return image


def red_pixels(image: np.ndarray) -> np.ndarray:
    """(H, W) mask of the clearly red pixels (JPEG blurs the edges a little)."""
    image = image.astype(int)
    return (image[..., 0] > 160) & (image[..., 1] < 90) & (image[..., 2] < 90)


def write_rotated_jpeg(path, orientation: int) -> str:
    """A JPEG whose stored pixels are turned so that applying its EXIF ``orientation`` shows displayed_image()."""
    stored = Image.fromarray(displayed_image()).transpose(STORED_FOR[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, format="JPEG", quality=95, exif=exif)
    with Image.open(path) as check:  # the fixture itself: stored sideways, shown upright
        assert check.size == (DISPLAYED[0], DISPLAYED[1])
        assert ImageOps.exif_transpose(check).size == (DISPLAYED[1], DISPLAYED[0])
    return str(path)


@pytest.fixture(params=[6, 8])
def rotated(request, tmp_path):
    return write_rotated_jpeg(tmp_path / f"photo-{request.param}.jpg", request.param), request.param


class RedGrounder:
    """A box around the red pixels, labelled with the first phrase."""

    def detect(self, image, phrases, query=""):
        ys, xs = np.nonzero(red_pixels(image))
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        return [Detection(box, 0.9, phrases[0], query)] if len(xs) else []


class _RedSession(SegmenterSession):
    def __init__(self):
        self.ids: list[int] = []

    @property
    def obj_ids(self):
        return list(self.ids)

    def step(self, image, prompts=(), pixel_values=None):
        self.ids += [prompt.obj_id for prompt in prompts if prompt.obj_id not in self.ids]
        masks = np.stack([red_pixels(image)] * len(self.ids)) if self.ids else np.zeros((0, *image.shape[:2]), bool)
        return FrameMasks(list(self.ids), masks, np.ones(len(self.ids), np.float32))

    def remove_objects(self, obj_ids):
        self.ids = [i for i in self.ids if i not in obj_ids]

    def state_size(self):
        return len(self.ids)


class RedSegmenter(VideoSegmenter):
    """Every prompted object is the set of red pixels: exact on the test photo whatever its orientation."""

    def start(self, height, width):
        return _RedSession()


def test_rotated_photos_are_read_upright(rotated, tmp_path):
    path, _ = rotated
    source = read_frames(path)
    assert (source.meta.height, source.meta.width) == DISPLAYED
    (frame,) = list(source)
    assert mask_iou(red_pixels(frame.image), _expected()) > 0.9
    from segvlm.frames import FrameStore

    with FrameStore.open(path) as store:
        assert np.array_equal(store[0], frame.image)
    with Image.open(path) as opened:  # a PIL image with its EXIF tag, passed directly
        assert np.array_equal(next(iter(read_frames([opened]))).image, frame.image)


def _expected() -> np.ndarray:
    mask = np.zeros(DISPLAYED, bool)
    mask[SQUARE] = True
    return mask


def test_masks_of_a_rotated_photo_line_up_with_the_displayed_image(rotated):
    path, _ = rotated
    pipe = segvlm.Pipeline(PipelineConfig(device="cpu"), grounder=RedGrounder(), segmenter=RedSegmenter())
    result = pipe("the red square", path)
    assert (result.info.height, result.info.width) == DISPLAYED == (result[0].height, result[0].width)
    (obj,) = result[0].objects
    assert obj.mask.shape == DISPLAYED and mask_iou(obj.mask, _expected()) > 0.9
    x0, y0, x1, y1 = obj.box_xyxy
    assert abs(x0 - 10) <= 1 and abs(y0 - 6) <= 1 and abs(x1 - 30) <= 1 and abs(y1 - 26) <= 1


def test_tiny_pipeline_masks_have_the_displayed_size(tiny, rotated):
    path, _ = rotated
    result = tiny("the red square", path)
    assert (result[0].height, result[0].width) == DISPLAYED
    assert all(obj.mask.shape == DISPLAYED for obj in result[0])


def test_dataset_rows_of_a_rotated_photo_are_upright_without_an_orientation_tag(rotated):
    from segvlm.data.rows import original_image_bytes, rows_from_segmentation

    path, _ = rotated
    pipe = segvlm.Pipeline(PipelineConfig(device="cpu"), grounder=RedGrounder(), segmenter=RedSegmenter())
    result = pipe("the red square", path)
    assert original_image_bytes(path, *DISPLAYED) is None  # rotated: the file's own bytes are not kept
    (row,) = rows_from_segmentation(result, path, "photo.jpg", is_image=True)
    with Image.open(io.BytesIO(row.image)) as stored:  # a decoder that ignores EXIF sees the same image
        assert stored.getexif().get(0x0112, 1) == 1
        pixels = np.asarray(stored.convert("RGB"))
    assert pixels.shape[:2] == DISPLAYED == (row.height, row.width)
    (region,) = row.regions
    assert region.rle.size == DISPLAYED and mask_iou(region.rle.decode(), red_pixels(pixels)) > 0.9


@pytest.mark.parametrize("declared", ["stored", "displayed"])
def test_coco_import_of_a_rotated_photo_turns_annotations_drawn_on_the_stored_pixels(rotated, tmp_path, declared):
    from segvlm.data.importers import rows_from_coco

    path, orientation = rotated
    height, width = DISPLAYED if declared == "displayed" else DISPLAYED[::-1]
    with Image.open(path) as opened:
        drawn_on = np.asarray(opened.convert("RGB")) if declared == "stored" else displayed_image()
    truth = red_pixels(drawn_on)  # the annotation, in the orientation the file declares
    ys, xs = np.nonzero(truth)
    coco = {
        "images": [{"id": 1, "file_name": path.rsplit("/", 1)[1], "height": height, "width": width}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": RLE.encode(truth).to_coco(),
                "bbox": [
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() + 1 - xs.min()),
                    float(ys.max() + 1 - ys.min()),
                ],
            }
        ],
        "categories": [{"id": 1, "name": "square"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (row,) = rows_from_coco(tmp_path / "coco.json", tmp_path)
    with Image.open(io.BytesIO(row.image)) as stored:
        assert stored.getexif().get(0x0112, 1) == 1
        pixels = np.asarray(stored.convert("RGB"))
    assert pixels.shape[:2] == DISPLAYED == (row.height, row.width)
    (region,) = row.regions
    assert region.rle.size == DISPLAYED and mask_iou(region.rle.decode(), red_pixels(pixels)) > 0.9
    x0, y0, x1, y1 = region.bbox_xyxy
    assert abs(x0 - 10) <= 1 and abs(y0 - 6) <= 1 and abs(x1 - 30) <= 1 and abs(y1 - 26) <= 1


def test_coco_import_refuses_a_size_that_is_neither_orientation(rotated, tmp_path):
    from segvlm.data.importers import rows_from_coco

    path, _ = rotated
    coco = {"images": [{"id": 1, "file_name": path.rsplit("/", 1)[1], "height": 10, "width": 10}], "annotations": []}
    errors: list = []
    assert list(rows_from_coco(coco, tmp_path, errors=errors)) == []
    assert "60x40 (HxW, as displayed) but the annotations say 10x10" in errors[0].reason


def test_describe_reads_a_rotated_photo_upright(rotated):
    from segvlm.vlm.describe import read_frame

    path, _ = rotated
    image = read_frame(path, 0)
    assert image.size == (DISPLAYED[1], DISPLAYED[0])
    assert mask_iou(red_pixels(np.asarray(image)), _expected()) > 0.9
    with pytest.raises(ValueError, match="has 1 frames, so frame 3 does not exist"):
        read_frame(path, 3)
    from segvlm.agents.describe import read_frame as agent_read_frame

    assert np.array_equal(agent_read_frame(Path(path), 0, "photo.jpg"), np.asarray(image))


# -- lists of paths and globs through the pipeline -------------------------------------------------------------


def test_pipeline_reads_a_list_of_paths_and_a_glob(tiny, tmp_path):
    for name, value in (("b.png", 200), ("a.png", 10)):
        Image.fromarray(np.full((24, 32, 3), value, np.uint8)).save(tmp_path / name)
    listed = tiny("car", [str(tmp_path / "b.png"), tmp_path / "a.png"])
    assert len(listed) == 2 and (listed.info.height, listed.info.width) == (24, 32)
    globbed = tiny("car", str(tmp_path / "*.png"))
    assert len(globbed) == 2 and globbed.info.source == str((tmp_path / "*.png").resolve())
    with pytest.raises(VideoReadError, match=r"the pattern '.*\*\.jpeg' matches no files"):
        tiny("car", str(tmp_path / "*.jpeg"))
