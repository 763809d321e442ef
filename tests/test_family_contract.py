"""Every registered VLM family keeps the contract segvlm's modules rely on.

Each :class:`segvlm.vlm.families.VLMFamily` record is checked on its own data (its prompt format renders,
its coordinate format parses back what it writes, its names are unique) and, for families with a tiny random
model, against that model: the model builds and is of the family, the rendered prompt goes through the
processor with the image expanded into exactly the number of tokens the family's layout predicts, the
layout's patches are the tower's, the connector and vision module names exist, and a training step's targets
are exactly the answer's tokens. A new family is checked by adding its record to ``FAMILIES``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segvlm.masktok.coords import FORMATS
from segvlm.resolve import TINY_MODELS
from segvlm.vlm.families import FAMILIES, VLMFamily, family, family_for

WITH_TINY = [f for f in FAMILIES if f.tiny_kind is not None]
SIZE = 64


def _ids(record: VLMFamily) -> str:
    return record.name


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))


def _box_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# -- the records themselves ------------------------------------------------------------------------------------


def test_names_and_model_types_are_unique():
    names = [f.name for f in FAMILIES]
    model_types = [t for f in FAMILIES for t in f.model_types]
    kinds = [f.tiny_kind for f in WITH_TINY]
    assert len(set(names)) == len(names) and len(set(model_types)) == len(model_types)
    assert len(set(kinds)) == len(kinds)


@pytest.mark.parametrize("record", FAMILIES, ids=_ids)
def test_record_is_found_by_every_name_it_answers_to(record):
    assert family(record.name) is record
    assert all(family_for(model_type) is record for model_type in record.model_types)
    if record.tiny_kind is not None:
        assert family(record.tiny_kind) is record
        assert TINY_MODELS[record.tiny_kind] == record.tiny_builder  # tiny-random:<kind> builds this family
    else:
        assert record.tiny_builder is None


@pytest.mark.parametrize("record", FAMILIES, ids=_ids)
def test_prompt_format_round_trips(record):
    """The rendered turn holds the image placeholder and the text once each, and splitting it at them gives
    back the template's own text around the fields."""
    prompt = record.prompt
    assert prompt.template.count("{image}") == 1 and prompt.template.count("{text}") == 1
    text = "What is {region1} doing?"
    rendered = prompt.render(text)
    assert rendered.count(prompt.image) == 1 and rendered.count(text) == 1
    before_image, after_image = rendered.split(prompt.image)
    head, _, tail = prompt.template.partition("{image}")
    assert before_image == head.format(text=text) and after_image == tail.format(text=text)


@pytest.mark.parametrize("record", FAMILIES, ids=_ids)
def test_coordinate_format_parses_back(record):
    fmt = record.coordinate_format()
    assert record.coordinates in FORMATS and fmt.name == record.coordinates
    width, height = 97, 83
    box = (10.3, 20.7, 50.2, 60.9)
    text = f"The cup is at {fmt.format_box(box, width, height)}, on the left."
    parsed = fmt.parse(text, width, height)
    assert len(parsed) == 1
    unit_x, unit_y = np.subtract(fmt.from_units(1, 1, width, height), fmt.from_units(0, 0, width, height))
    tolerance = (unit_x, unit_y, unit_x, unit_y)  # one unit of the format's grid, in pixels
    assert all(abs(a - b) <= t for a, b, t in zip(parsed[0].box_xyxy, box, tolerance, strict=True))
    assert fmt.parse("no box here", width, height) == []


@pytest.mark.parametrize("record", [f for f in FAMILIES if f.layout is not None], ids=_ids)
def test_layout_names_a_vision_layout(record):
    from segvlm.masktok.layouts import VisionLayout

    assert issubclass(record.layout_class(), VisionLayout)
    assert record.vision_modules and record.connector_modules  # the pooled/encoder designs train next to them


def test_a_family_without_a_layout_is_refused_by_the_layout_designs_with_the_supported_list():
    from types import SimpleNamespace

    from segvlm.masktok.layouts import layout_for

    model = SimpleNamespace(config=SimpleNamespace(model_type="paligemma"))
    with pytest.raises(ValueError, match=r"no vision layout for model_type 'paligemma'.*'qwen2_vl'"):
        layout_for(model, None)


# -- against each family's tiny model ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=WITH_TINY, ids=_ids)
def loaded(request):
    from segvlm.vlm import MaskAwareVLM

    record = request.param
    vlm = MaskAwareVLM.from_pretrained(record.tiny_model, mask_tokenizer="text")
    return record, vlm


def test_tiny_model_builds_and_is_of_its_family(loaded):
    from segvlm.testing.vlm import tiny_model_dir

    record, vlm = loaded
    assert vlm.model_type in record.model_types and vlm.family is record
    assert vlm.prompt_format == record.prompt
    assert (tiny_model_dir(record.name) / "config.json").is_file()
    assert not getattr(vlm.processor, "chat_template", None)  # so the family's own prompt format is what runs


def test_prompt_and_coordinates_go_through_the_processor(loaded):
    """The rendered prompt survives tokenisation: the user text and the region's coordinates decode back,
    and the coordinates parse back to the mask's box."""
    record, vlm = loaded
    mask = _box_mask(16, 48, 8, 40)
    prepared = vlm.prepare(_image(0), [mask], "What is {region1}?")
    decoded = vlm.tokenizer.decode(prepared.inputs["input_ids"][0])
    region_text = prepared.tokens.region_texts[0][0]
    assert "What is" in decoded and region_text in decoded
    parsed = vlm.mask_tokenizer.decode(decoded, (SIZE, SIZE))
    assert len(parsed) == 1 and np.allclose(parsed[0].box_xyxy, (8, 16, 40, 48), atol=1.0)
    assert vlm.mask_tokenizer.coordinate_format.name == record.coordinates


def test_patch_layout_matches_the_processor_output(loaded):
    """The layout's merged grid has one entry per image token the processor put in the prompt, and its
    patch grid one per patch the tower returns."""
    record, vlm = loaded
    image = _image(1)
    prepared = vlm.prepare(image, [_box_mask(0, 32, 0, 32)], "Describe {region1}.")
    image_tokens = int((prepared.inputs["input_ids"][0] == vlm.processor.image_token_id).sum())
    layout = vlm.layout
    assert isinstance(layout, record.layout_class())
    inputs = layout.image_inputs([image])
    grid = layout.grids([[_box_mask(0, 32, 0, 32)]], inputs, [image])[0]
    with torch.no_grad():
        features = layout.features(inputs, (-1,))
    assert grid.merged.shape[1] == image_tokens == features.merged[0].shape[0]
    assert grid.coverage.shape[1] == features.patches[0].shape[0]
    assert 0 < float(grid.coverage.sum()) < grid.coverage.shape[1]  # the mask covers some patches, not all


def test_connector_and_vision_modules_exist(loaded):
    from segvlm.training.trainer import param_group

    record, vlm = loaded
    module_names = [name for name, _ in vlm.model.named_modules()]
    for part in (*record.connector_modules, *record.vision_modules):
        assert any(part in name.split(".") for name in module_names), f"{part!r} names no module of the model"
    groups = {}
    for name, param in vlm.model.named_parameters():
        group = param_group(name, record)
        assert group == param_group(name)  # the record agrees with the names of every known family
        groups[group] = groups.get(group, 0) + param.numel()
    assert set(groups) == {"connector", "vision", "lm"} and all(groups.values())
    embedding = vlm.layout.embedding_module()
    where = next(name for name, module in vlm.model.named_modules() if module is embedding)
    assert param_group(where + ".weight", record) == "vision"  # the mask-in-encoder hook sits in the tower


def test_training_step_targets_line_up(loaded):
    """The labels of an encoded batch are exactly each answer's tokens (plus end of sequence), and one
    backward pass from them reaches the connector."""
    from segvlm.training.data import RegionBatch
    from segvlm.training.trainer import answer_loss, encode_batch, param_group

    record, vlm = loaded
    answers = [" red", " a blue one"]
    batch = RegionBatch(
        images=[_image(2), _image(3)],
        regions=[[_box_mask(0, 20, 0, 20)], [_box_mask(30, 60, 30, 60)]],
        prompts=["What colour is {region1}?"] * 2,
        answers=answers,
    )
    encoded = encode_batch(vlm, batch, with_answers=True)
    eos = vlm.tokenizer.eos_token
    for row, answer in enumerate(answers):
        labelled = encoded.labels[row][encoded.labels[row] != -100].tolist()
        assert vlm.tokenizer.decode(labelled) == answer + eos
    vlm.model.zero_grad()
    loss = answer_loss(vlm.model(**encoded.inputs).logits, encoded.labels)
    loss.backward()
    assert torch.isfinite(loss)
    connector_grads = [p.grad for n, p in vlm.model.named_parameters() if param_group(n, record) == "connector"]
    assert connector_grads and any(g is not None and g.abs().sum() > 0 for g in connector_grads)
    vlm.model.zero_grad()
