"""Property-based tests (hypothesis) of segvlm's formats: RLE, saved results / COCO files, mask-token text, queries.

Each format either round-trips what it wrote or refuses garbage with a :class:`~segvlm.errors.SegvlmError` that
names the problem; none lets a KeyError, TypeError or a pycocotools crash through. Runs are kept short (tens to
a couple of hundred examples, no deadline) so the file takes a few seconds.
"""

from __future__ import annotations

import copy
import json
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segvlm.errors import FormatError, QueryError, SegvlmError
from segvlm.masks import RLE
from segvlm.masktok import TextMaskTokenizer
from segvlm.masktok.coords import FORMATS, Qwen25VLBoxFormat
from segvlm.query import parse_query, source_phrases
from segvlm.types import FramePrompt, FrameResult, ObjectMask, VideoInfo, VideoSegmentation

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON value, small: what a cut or hand-edited file may hold where segvlm expects something else.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


# -- RLE ------------------------------------------------------------------------------------------------------


def _column_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed counts of a mask: run lengths in column-major order, starting with background."""
    flat = mask.ravel(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))  # a sentinel closes the last run
    return np.diff(np.concatenate([[0], changes])).tolist()


masks = hnp.arrays(np.bool_, st.tuples(st.integers(0, 37), st.integers(0, 37)))


@FAST
@given(masks)
@example(np.zeros((0, 0), bool))
@example(np.zeros((7, 13), bool))  # empty, odd size
@example(np.ones((9, 5), bool))  # full
@example(np.pad(np.ones((1, 1), bool), ((3, 5), (0, 6))))  # one pixel
@example(np.ones((1, 1), bool))
def test_rle_round_trips_any_mask(mask):
    rle = RLE.encode(mask)
    decoded = rle.decode()
    assert decoded.shape == mask.shape and np.array_equal(decoded, mask)
    assert rle.area == int(mask.sum())
    assert RLE.from_coco(rle.to_coco()) == rle
    assert RLE.from_coco(json.loads(json.dumps(rle.to_coco()))) == rle  # through a JSON file
    uncompressed = {"size": list(mask.shape), "counts": _column_runs(mask)}
    assert sum(uncompressed["counts"]) == mask.size
    assert np.array_equal(RLE.from_coco(uncompressed).decode(), mask)
    if mask.any():
        ys, xs = np.nonzero(mask)
        assert rle.bbox_xyxy() == (xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0)


def _accepted_or_format_error(segmentation) -> RLE | None:
    try:
        rle = RLE.from_coco(segmentation, "annotation 7's mask")
    except FormatError as error:
        assert str(error).startswith("annotation 7's mask ")  # names the entry
        return None
    height, width = rle.size
    decoded = rle.decode()  # safe: the counts cover exactly height * width pixels
    assert decoded.shape == (height, width) and rle.area == int(decoded.sum())
    return rle


@FAST
@given(JSON)
def test_any_json_value_is_an_rle_or_a_format_error(value):
    _accepted_or_format_error(value)


@FAST
@given(
    size=st.one_of(JSON, st.tuples(st.integers(-3, 40), st.integers(-3, 40)).map(list)),
    counts=st.one_of(JSON, st.text(max_size=30), st.binary(max_size=20), st.lists(st.integers(-5, 60), max_size=8)),
)
def test_rle_dicts_with_any_size_and_counts_are_checked(size, counts):
    _accepted_or_format_error({"size": size, "counts": counts})


@FAST
@given(
    masks.filter(lambda m: m.size > 0),
    st.data(),
)
def test_cut_or_edited_counts_are_refused_or_still_cover_the_mask(mask, data):
    coco = RLE.encode(mask).to_coco()
    counts = coco["counts"]
    edit = data.draw(st.sampled_from(["cut", "char", "grow", "size"]))
    if edit == "cut":
        counts = counts[: data.draw(st.integers(0, max(len(counts) - 1, 0)))]
    elif edit == "char":
        position = data.draw(st.integers(0, len(counts) - 1))
        counts = counts[:position] + data.draw(st.characters(max_codepoint=0x2FF)) + counts[position + 1 :]
    elif edit == "grow":
        counts += data.draw(st.text(alphabet="0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmno"))
    else:
        coco["size"] = [mask.shape[0] + data.draw(st.integers(1, 5)), mask.shape[1]]
    rle = _accepted_or_format_error({"size": coco["size"], "counts": counts})
    if edit == "cut" and rle is not None:
        pytest.fail(f"a cut counts string {counts!r} of a {mask.shape} mask was accepted")
    if edit == "size":
        assert rle is None  # the runs no longer cover the mask


def test_malformed_rle_messages_name_the_problem():
    with pytest.raises(FormatError, match=r"cover 0 pixels, but its size 2x3 has 6"):
        RLE.from_coco({"size": [2, 3], "counts": "0"})  # pycocotools alone would return uninitialised memory
    with pytest.raises(FormatError, match=r"garbled counts .* '0' to 'o'"):
        RLE.from_coco({"size": [2, 3], "counts": "0~"})
    with pytest.raises(FormatError, match=r"size list \[2\]; a COCO RLE size is \[height, width\]"):
        RLE.from_coco({"size": [2], "counts": "06"})
    with pytest.raises(FormatError, match=r"is not a COCO RLE: expected \{'size'"):
        RLE.from_coco({"counts": "06"})
    with pytest.raises(FormatError, match=r"COCO polygons are a list of \[x0, y0, x1, y1, \.\.\.\] lists"):
        RLE.from_polygons([[1, 2, 3]], 4, 4)
    assert RLE.from_polygons([[0, 0, 4, 0, 4, 4, 0, 4]], 6, 6).area > 0


# -- saved results and COCO files -----------------------------------------------------------------------------


def _saved_result() -> dict:
    """A small saved result with every optional part: two frames, two tracks, a prompt with a mask, a lock."""
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:6] = True
    rle = RLE.encode(mask)
    objects = [
        ObjectMask(1, "cup", "the cup", 0.9, rle.bbox_xyxy(), rle),
        ObjectMask(2, "dog", "a dog", 0.5, rle.bbox_xyxy(), rle),
    ]
    result = VideoSegmentation(
        VideoInfo("clip.mp4", 6, 8, 10.0, 2),
        "the cup and a dog",
        ["cup", "dog"],
        [FrameResult(0, 6, 8, 0.0, objects), FrameResult(2, 6, 8, 0.2, objects[:1])],
        meta={"preset": "x"},
        prompts={1: {0: FramePrompt(box=(1.0, 1.0, 5.0, 4.0), source="detector")}, 2: {2: FramePrompt(mask=rle)}},
        locks={1: {0, 2}},
        labels={2: "puppy"},
    )
    folder = tempfile.mkdtemp()
    result.save(folder)
    data = json.loads((Path(folder) / "masks.json").read_text())
    loaded = VideoSegmentation.load(folder)
    assert (loaded.frames, loaded.prompts, loaded.locks, loaded.labels) == (
        result.frames,
        result.prompts,
        result.locks,
        result.labels,
    )
    return data


SAVED = _saved_result()


def _paths(value, prefix=()):
    """Every (path, value) in a JSON tree, the root included."""
    yield prefix, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


ALL_PATHS = [path for path, _ in _paths(SAVED)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("coco")


def _load_or_format_error(folder, data=None, text=None) -> VideoSegmentation | None:
    (folder / "masks.json").write_text(text if text is not None else json.dumps(data))
    try:
        loaded = VideoSegmentation.load(str(folder))
    except FormatError as error:
        assert str(error).startswith(str(folder / "masks.json"))  # the message names the file
        return None
    loaded.to_coco()  # a result that loads is usable
    loaded.tracks()
    return loaded


@FAST
@given(path=st.sampled_from(ALL_PATHS[1:]), action=st.sampled_from(["delete", "replace"]), value=JSON)
def test_an_edited_saved_result_loads_or_names_the_problem(folder, path, action, value):
    data = copy.deepcopy(SAVED)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _load_or_format_error(folder, data)


@QUICK
@given(JSON)
def test_any_json_file_loads_or_names_the_problem(folder, value):
    _load_or_format_error(folder, value)


@QUICK
@given(st.integers(0, len(json.dumps(SAVED)) - 1))
def test_a_cut_file_is_refused_as_invalid_json(folder, cut):
    assert _load_or_format_error(folder, text=json.dumps(SAVED)[:cut]) is None


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["annotations"][1].pop("segmentation"), r"annotation 1 has no 'segmentation'"),
        (lambda d: d["annotations"][0].update(image_id=99), r"annotation 0 refers to image 99, which is not in"),
        (lambda d: d["annotations"][0]["segmentation"].update(counts="0"), r"annotation 0's segmentation has run"),
        (lambda d: d["annotations"][0]["segmentation"].update(size=[8, 6]), r"annotation 0's segmentation is 8x6 but"),
        (lambda d: d["images"][1].update(height="6"), r"image 1 has height = '6', which is not an integer"),
        (lambda d: d.update(images={}), r"the file has images = \{\}, not a list of images"),
        (lambda d: d["segvlm"]["prompts"][0].update(box="abc"), r"prompt 0 is malformed \(ValueError"),
        (lambda d: d["segvlm"].update(locks={"one": [0]}), r"locks entry 'one' is not a track id"),
        (lambda d: d["segvlm"].update(labels={"2": 7}), r"labels entry '2' is 7; labels map a track id to a string"),
        (lambda d: d["segvlm"].update(format_version=99), r"written by a newer segvlm \(format 99"),
        (lambda d: d["annotations"][2].update(track_id=1, image_id=1), r"annotation 2 repeats track 1 in image 1"),
    ],
)
def test_coco_load_errors_name_the_entry_and_the_problem(folder, edit, match):
    data = copy.deepcopy(SAVED)
    edit(data)
    (folder / "masks.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match=match):
        VideoSegmentation.load(str(folder))


def test_a_plain_coco_file_with_polygons_loads(folder):
    plain = {
        "images": [{"id": 5, "file_name": "a.jpg", "height": 10, "width": 10}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}],
        "categories": [{"id": 3, "name": "box"}],
    }
    loaded = _load_or_format_error(folder, plain)
    (obj,) = loaded[0].objects
    assert obj.label == "box" and obj.track_id == 1 and 20 <= obj.area <= 36 and obj.box_xyxy[0] >= 1


# -- mask-token text formats ----------------------------------------------------------------------------------

sizes = st.tuples(st.integers(1, 2000), st.integers(1, 2000)).filter(lambda s: max(s) / min(s) <= 50)


def _unit(name: str, fmt, width: int, height: int) -> tuple[float, float]:
    """One unit of the format's grid, in pixels (x, y)."""
    if isinstance(fmt, Qwen25VLBoxFormat):
        rw, rh = fmt.resized(width, height)
        return width / rw, height / rh
    cells = {"generic": 1000, "qwen2_vl": 1000, "paligemma": 1024, "kosmos2": 32}[name]
    return width / cells, height / cells


@st.composite
def boxes(draw, width: int, height: int):
    xs = sorted(draw(st.floats(0, width, allow_nan=False)) for _ in range(2))
    ys = sorted(draw(st.floats(0, height, allow_nan=False)) for _ in range(2))
    return (xs[0], ys[0], xs[1], ys[1])


@pytest.mark.parametrize("name", sorted(FORMATS))
@QUICK
@given(data=st.data())
def test_each_format_parses_back_what_it_wrote_within_one_unit(name, data):
    width, height = data.draw(sizes)
    fmt = FORMATS[name]()
    box = data.draw(boxes(width, height))
    points = data.draw(
        st.lists(st.tuples(st.floats(0, width, allow_nan=False), st.floats(0, height, allow_nan=False)), max_size=8)
    )
    text = fmt.format_box(box, width, height) + (fmt.format_polygon(points, width, height) if points else "")
    (region,) = fmt.parse(f"Sure: {text} done.", width, height)
    unit_x, unit_y = _unit(name, fmt, width, height)
    tolerance = np.array([unit_x, unit_y, unit_x, unit_y]) * 1.0001
    assert np.all(np.abs(np.array(region.box_xyxy) - np.array(box)) <= tolerance), (text, region.box_xyxy, box)
    if points:
        assert region.polygon is not None and len(region.polygon) == len(points)
        for (x, y), (px, py) in zip(points, region.polygon):
            assert abs(x - px) <= unit_x * 1.0001 and abs(y - py) <= unit_y * 1.0001
    else:
        assert region.polygon is None


@pytest.mark.parametrize("name", sorted(FORMATS))
@QUICK
@given(data=st.data())
def test_the_text_tokenizer_decodes_its_own_region_text(name, data):
    from PIL import Image

    width, height = data.draw(
        st.tuples(st.integers(1, 120), st.integers(1, 120)).filter(lambda s: max(s) / min(s) <= 50)
    )
    x0, x1 = sorted(data.draw(st.lists(st.integers(0, width), min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(data.draw(st.lists(st.integers(0, height), min_size=2, max_size=2, unique=True)))
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    tokenizer = TextMaskTokenizer(name, polygon_points=data.draw(st.sampled_from([0, 6])))
    (text,) = tokenizer.encode([Image.new("RGB", (width, height))], [[mask]]).region_texts[0]
    (region,) = tokenizer.decode(text, (width, height))
    unit_x, unit_y = _unit(name, tokenizer.coordinate_format, width, height)
    tolerance = np.array([unit_x, unit_y, unit_x, unit_y]) * 1.0001
    assert np.all(np.abs(np.array(region.box_xyxy) - np.array([x0, y0, x1, y1])) <= tolerance)


FRAGMENTS = st.sampled_from(
    ["[", "]", ",", "(", ")", " ", "-", "<poly>", "</poly>", "<loc", ">", "<|box_start|>", "<|box_end|>",
     '"bbox_2d": [', "<object>", "</object>", "<patch_index_", "٣", "\n"]
)  # fmt: skip
NUMBERS = st.integers(-(10**12), 10**12).map(str) | st.text(alphabet="0123456789", min_size=1, max_size=5000)
GARBAGE = st.lists(FRAGMENTS | NUMBERS, max_size=40).map("".join) | st.text(max_size=200)


@pytest.mark.parametrize("name", sorted(FORMATS))
@FAST
@given(text=GARBAGE, size=sizes)
def test_each_format_rejects_garbage_cleanly(name, text, size):
    width, height = size
    for region in FORMATS[name]().parse(text, width, height):  # never raises; what it reads lies in the image
        x0, y0, x1, y1 = region.box_xyxy
        assert 0 <= x0 <= width and 0 <= x1 <= width and 0 <= y0 <= height and 0 <= y1 <= height
        for x, y in region.polygon or ():
            assert 0 <= x <= width and 0 <= y <= height


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_garbage_numbers_and_sizes_name_the_problem(name):
    fmt = FORMATS[name]()
    huge = "[" + ",".join(["9" * 5000] * 4) + "]<|box_start|>(99999999,1),(2,3)<|box_end|>" + "<loc9999>" * 4
    assert fmt.parse(huge + "<object><patch_index_9999><patch_index_0001></object>", 100, 80) == []
    with pytest.raises(SegvlmError, match=r"the image size must be positive, got 0x80"):
        fmt.parse(fmt.format_box((1, 1, 5, 5), 100, 80), 0, 80)


# -- query parsing --------------------------------------------------------------------------------------------


def _names_something(text: str) -> bool:
    return any(unicodedata.category(char)[0] in "LNS" for char in text)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.lists(st.text(), max_size=5)))
@example("\x00\u200b\ufeff\u202e")
@example("find the 🐶 and the 👨\u200d👩\u200d👧")
def test_the_query_parser_never_raises_on_unicode_except_for_an_empty_query(query):
    try:
        parsed = parse_query(query)
    except QueryError as error:
        assert "names nothing to segment" in str(error)
        return
    assert parsed.phrases and len(parsed.sources) == len(parsed.phrases)
    assert len(set(parsed.phrases)) == len(parsed.phrases)
    for phrase, source in zip(parsed.phrases, parsed.sources):
        assert _names_something(phrase) and phrase == phrase.strip() and "\x00" not in phrase
        assert unicodedata.is_normalized("NFC", phrase) and source
    assert len(source_phrases(parsed.text, parsed.phrases)) == len(parsed.phrases)  # the grounders' lookup


@FAST
@given(st.text(), st.lists(st.text(), max_size=4))
def test_source_phrases_never_raise(query, phrases):
    found = source_phrases(query, phrases)
    assert len(found) == len(phrases)
