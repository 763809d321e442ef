"""The mask-modality experiment: tasks with known, balanced answers; marks that spare the regions; the two
design options it uses (tag marks, one encoder channel per region); and a tiny end-to-end run that writes
every promised number."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from typer.testing import CliRunner

from segvlm.scenes import COLOURS, SceneConfig, layout_scene, make_scene, render

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "mask_modality_experiment.py"


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("mask_modality_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script does: the tiny model's ops stall on threads that share busy cores
    yield module
    torch.set_num_threads(threads)
    sys.modules.pop(spec.name, None)


def _centroid_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean())


def _truth(exp, name: str, example) -> str:
    """The answer recomputed from the pixels and masks alone, independently of the generator's bookkeeping."""
    image = np.asarray(example.image)  # (H, W, 3)
    region = example.regions[0]
    if name == "colour":
        (colour,) = {tuple(p) for p in image[region]}
        return next(k for k, v in COLOURS.items() if v == colour)
    if name == "shape":
        ys, xs = np.nonzero(region)
        fill = region.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))  # square ~1, circle ~pi/4, triangle ~1/2
        return "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    if name == "relation":
        return "yes" if _centroid_x(example.regions[0]) < _centroid_x(example.regions[1]) else "no"
    if name == "count":
        objects, n = ndimage.label(image.any(-1))  # (H, W) one label per object
        inside = [k for k in range(1, n + 1) if region[objects == k].all()]
        touching = [k for k in range(1, n + 1) if region[objects == k].any()]
        assert inside == touching  # every object is wholly inside or wholly outside the region
        return str(len(inside))
    if name == "motion":
        (y0, x0), (y1, x1) = (np.argwhere(r).mean(0) for r in example.regions)
        dx, dy = x1 - exp.FRAME_SIZE - x0, y1 - y0
        return ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
    raise AssertionError(name)


def test_scene_helpers_the_tasks_are_built_from():
    config = SceneConfig(image_size=96, n_objects=3, distinct_shapes=True, min_gap=6)
    for index in range(10):
        scene = make_scene(4, index, config)
        assert len({o.shape for o in scene.objects}) == 3
        boxes = [(o.centres[0], o.side) for o in scene.objects]
        for a in range(3):
            for b in range(a):
                (xa, ya), sa = boxes[a]
                (xb, yb), sb = boxes[b]
                gap = (sa + sb) / 2 + 6
                assert abs(xa - xb) >= gap or abs(ya - yb) >= gap
        again = render(scene.objects, config)  # the same objects draw the same frames and masks
        assert np.array_equal(again.frames[0], scene.frames[0])
        assert all(np.array_equal(m, n) for m, n in zip(again.masks[0], scene.masks[0], strict=True))
    chosen = layout_scene(np.random.default_rng(0), ["red", "blue"], ["circle", "square"], ["small", "large"], config)
    assert [(o.colour, o.shape, o.size) for o in chosen.objects] == [
        ("red", "circle", "small"),
        ("blue", "square", "large"),
    ]
    with pytest.raises(ValueError, match="distinct shapes"):
        SceneConfig(n_objects=4, distinct_shapes=True)


def test_every_task_has_balanced_labels_and_correct_answers(exp):
    n = 84  # a multiple of every task's number of answers
    for task in exp.TASKS:
        examples = [task.make(5, i) for i in range(n)]
        counts = Counter(e.answer for e in examples)
        assert set(counts) == set(task.choices) and set(counts.values()) == {n // len(task.choices)}, task.name
        assert task.chance == pytest.approx(1 / len(task.choices))
        assert task.chance <= task.no_region_ceiling < 1
        for e in examples:
            assert len(e.regions) == task.n_regions and all(r.shape == (128, 128) and r.any() for r in e.regions)
            assert e.image.size == (128, 128)
            assert _truth(exp, task.name, e) == e.answer, task.name
        again = task.make(5, 3)
        assert np.array_equal(np.asarray(again.image), np.asarray(examples[3].image))  # a pure function


def test_position_pretraining_questions_are_balanced_and_answered_from_the_pixels(exp):
    examples = [exp.position_example(3, i) for i in range(40)]
    parsed = [re.fullmatch(r"Is the (\w+) object (left of|above) the (\w+) object\?", e.question) for e in examples]
    assert all(parsed)
    assert Counter(e.answer for e in examples) == {"yes": 20, "no": 20}
    assert Counter(m[2] for m in parsed) == {"left of": 20, "above": 20}
    for e, m in zip(examples, parsed, strict=True):
        assert e.regions == ()  # region-free: objects are named by colour
        first, relation, second = m.groups()
        image = np.asarray(e.image)  # (H, W, 3)
        centre = {c: np.argwhere((image == COLOURS[c]).all(-1)).mean(0) for c in (first, second)}  # (y, x)
        axis = 1 if relation == "left of" else 0
        assert abs(centre[second][axis] - centre[first][axis]) >= exp.POSITION_MARGIN - 1
        assert ("yes" if centre[first][axis] < centre[second][axis] else "no") == e.answer, e.question


def test_tags_leave_every_region_untouched_and_stock_marks_do_not(exp):
    for task in exp.TASKS:
        for i in range(6):
            example = task.make(1, i)
            marked = np.asarray(exp.draw_tags(example.image, list(example.regions)))  # (H, W, 3)
            original = np.asarray(example.image)
            changed = (marked != original).any(-1)  # (H, W)
            union = np.logical_or.reduce(example.regions)
            assert not (changed & union).any(), task.name
            assert changed.sum() > 20  # the ring and the tag are drawn
    by_style = {(m.style, m.image_size): m.changed_fraction for m in exp.measure_overlays(scenes=5)}
    assert by_style[("ring_and_tag", 128)] == 0.0
    assert by_style[("alpha", 64)] == pytest.approx(1.0) and by_style[("contour", 64)] > 0.4


def test_mark_questions_are_answered_from_the_marked_pixels(exp):
    examples = [exp.mark_example(3, i) for i in range(40)]
    assert Counter(e.question for e in examples) == {"Where is mark 1?": 20, "Where is mark 2?": 20}
    for e in examples:
        n = int(e.question.split()[-1][:-1])
        image = np.asarray(e.image)  # (H, W, 3)
        ring = np.argwhere((image == exp.MARK_COLOURS[n - 1]).all(-1))  # (K, 2) ring and tag pixels, (y, x)
        assert e.regions == () and len(ring) > 20  # no region input: the marks are in the image
        (y0, x0), (y1, x1) = ring.min(0), ring.max(0)
        inside = image[y0 + 3 : y1 - 2, x0 + 3 : x1 - 2].reshape(-1, 3)  # the marked object, within its ring
        assert inside.any(-1).any()
        column, row = (int(v) for v in e.answer.split())
        cell = exp.IMAGE_SIZE / exp.MARK_CELLS
        centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2  # the ring's middle is the object's (tag aside)
        assert (
            abs(centre_x - (column - 0.5) * cell) <= cell / 2 + 8 and abs(centre_y - (row - 0.5) * cell) <= cell / 2 + 8
        )


def test_mark_side_probe_is_answered_by_the_marked_object(exp):
    from segvlm.masktok.visual_prompt import dilate

    for i in range(12):
        e = exp.mark_side_example(exp.MarkStyle(ring=4), 2, i)
        image = np.asarray(e.image)  # (H, W, 3)
        mark = (image == exp.MARK_COLOURS[0]).all(-1)  # (H, W)
        painted = np.logical_or.reduce([(image == COLOURS[c]).all(-1) for c in exp.EXPERIMENT_COLOURS])  # (H, W)
        objects, n = ndimage.label(painted)  # (H, W) one label per object (the tag's digit is not one)
        assert n == 3 and e.question == "Is mark 1 on the left?"
        ringed = [k for k in range(1, n + 1) if mark[dilate(objects == k, 2) & (objects != k)].mean() > 0.8]
        assert len(ringed) == 1  # one object, and only one, is ringed in mark 1's colour
        x = np.nonzero(objects == ringed[0])[1].mean()
        assert ("yes" if x < exp.IMAGE_SIZE / 2 else "no") == e.answer


def test_mark_options_change_only_the_set_of_mark_arm(exp, tmp_path):
    default = exp.Settings()
    assert [a.make().config_dict() for a in exp.experiment_arms(default)] == [a.make().config_dict() for a in exp.ARMS]
    changed = exp.Settings(marks=exp.MarkStyle(ring=4, place="centre", font_size=6))
    arms = {a.name: a for a in exp.experiment_arms(changed)}
    som = arms["set_of_mark"].make()
    assert (som.ring, som.tag_place, som.font_size) == (4, "centre", 6) and "ring4-centre-font6" in arms[
        "set_of_mark"
    ].how
    assert all(arms[a.name] is a for a in exp.ARMS if a.name != "set_of_mark")
    spared = {c.task: c.mean for c in exp.measure_mark_coverage(exp.MarkStyle(), examples=4)}
    covered = {c.task: c.mean for c in exp.measure_mark_coverage(changed.marks, examples=4)}
    assert set(spared.values()) == {0.0} and all(0 < covered[t] < 0.3 for t in ("colour", "shape", "relation"))

    settings = exp.Settings(
        mode="smoke", budget=exp.MODES["smoke"], seeds=(0,), arms=("set_of_mark",), tasks=("relation",),
        work_dir=tmp_path, mark_pretraining=True, marks=changed.marks, mark_probes=True,
    )  # fmt: skip
    report = exp.run_experiment(settings, log=lambda _: None)
    assert report.base.steps == round(exp.MODES["smoke"].pretrain_steps * 3 / 2)
    assert set(report.base.curve[-1][1]) == {"describe", "ground", "mark"}
    assert report.base.folder.endswith("-marks-ring4-centre-font6")
    assert {c.style for c in report.mark_coverage} == {"ring4-centre-font6"}
    assert [v.style for v in report.mark_visibility] == ["ring2-beside-font10", "ring4-centre-font6"]
    assert all(0 <= v.balanced_accuracy <= 1 and 0 < v.marked_tokens < 0.5 for v in report.mark_visibility)
    assert [p.task for p in report.position_probes] == [
        "side_of_mark_1 (ring2-beside-font10)",
        "side_of_mark_1 (ring4-centre-font6)",
    ]


@pytest.fixture(scope="module")
def tiny_vlm_dir():
    from segvlm.resolve import resolve_model

    return resolve_model("tiny-random:smolvlm")


def test_union_channel_cannot_tell_regions_apart_but_region_channels_can(exp, tiny_vlm_dir):
    from segvlm.masktok import MaskEncoderPrompt
    from segvlm.vlm import MaskAwareVLM

    example = exp.RELATION_TASK.make(0, 0)
    a, b = example.regions
    stock = MaskAwareVLM.from_pretrained(tiny_vlm_dir, mask_tokenizer=MaskEncoderPrompt(max_regions=2))
    forward = stock.mask_tokenizer.encode([example.image], [[a, b]])
    backward = stock.mask_tokenizer.encode([example.image], [[b, a]])
    assert torch.equal(forward.encoder_masks, backward.encoder_masks)  # "1 left of 2" == "2 left of 1"
    assert forward.prompts("Is {region1} left of {region2}?") == backward.prompts("Is {region1} left of {region2}?")

    per_region = MaskEncoderPrompt(max_regions=2, channels="region")
    channels = MaskAwareVLM.from_pretrained(tiny_vlm_dir, mask_tokenizer=per_region)
    forward = channels.mask_tokenizer.encode([example.image], [[a, b]])
    backward = channels.mask_tokenizer.encode([example.image], [[b, a]])
    assert forward.encoder_masks.shape[1] == 2  # (tiles, regions, H, W)
    assert torch.equal(forward.encoder_masks[:, 0], backward.encoder_masks[:, 1])
    assert not torch.equal(forward.encoder_masks, backward.encoder_masks)
    one = channels.mask_tokenizer.encode([example.image], [[a]])
    assert torch.equal(one.encoder_masks[:, 0], forward.encoder_masks[:, 0]) and not one.encoder_masks[:, 1].any()
    with torch.no_grad():
        channels.mask_tokenizer.conv.weight.normal_()
    plain = channels.logits([example.image], [[a, b]], "Is {region1} left of {region2}?", use_regions=False)
    marked = channels.logits([example.image], [[a, b]], "Is {region1} left of {region2}?")
    assert not torch.allclose(plain, marked)  # the hook adds the channels to the patch embedding


def test_cached_pooled_embeddings_equal_the_tokenizer(exp, tiny_vlm_dir):
    from segvlm.vlm import MaskAwareVLM

    arm = next(a for a in exp.ARMS if a.name == "mask_tokens")
    vlm = MaskAwareVLM.from_pretrained(tiny_vlm_dir, mask_tokenizer=arm.make())
    with torch.no_grad():
        for proj in (vlm.mask_tokenizer.feature_proj, vlm.mask_tokenizer.shape_proj):
            proj[2].weight.normal_()  # leave the zero init, so the comparison is not 0 == 0
    examples = [exp.Example(task, task.make(2, i)) for task in (exp.COLOUR_TASK, exp.RELATION_TASK) for i in range(2)]
    cached = exp.encode(vlm, arm, examples, "")
    inputs = {k: v.unpack(vlm.device) if isinstance(v, exp.Packed) else v for k, v in cached.inputs.items()}
    mine = exp.pooled_embeds(vlm.mask_tokenizer, cached.pooled, inputs)
    reference = vlm.mask_tokenizer.encode([e.example.image for e in examples], [e.example.regions for e in examples])
    assert [m.shape for m in mine] == [(2, 64), (2, 64), (4, 64), (4, 64)]
    for ours, theirs in zip(mine, reference.region_embeds, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-3)  # pixels are cached in float16


def test_smoke_run_writes_every_number(exp, tmp_path):
    settings = exp.Settings(mode="smoke", budget=exp.MODES["smoke"], seeds=(0, 1, 2), work_dir=tmp_path / "work")
    report = exp.run_experiment(settings, log=lambda _: None)
    data = json.loads(json.dumps(report.to_json(), default=str))
    for key in (
        "mode", "budget", "seeds", "model", "base", "image_size", "device", "torch_threads", "cache", "metric", "arms",
        "tasks", "table", "table_markdown", "runs", "overlay_measurement", "mark_locality", "seconds",
        "seconds_per_step",
    ):  # fmt: skip
        assert key in data, key
    arms, tasks = [a.name for a in exp.ARMS], [t.name for t in exp.TASKS]
    assert [a["name"] for a in data["arms"]] == arms and [t["name"] for t in data["tasks"]] == tasks
    assert data["seeds"] == [0, 1, 2] and data["base"]["steps"] == exp.MODES["smoke"].pretrain_steps
    for task, record in zip(exp.TASKS, data["tasks"], strict=True):
        assert record["chance"] == pytest.approx(1 / len(task.choices))
        assert record["no_region_ceiling"] == task.no_region_ceiling
        expected = Counter(task.label(i) for i in range(exp.MODES["smoke"].eval_per_task))
        assert record["eval_labels"] == {k: 3 * v for k, v in expected.items()}  # three seeds
    assert len(data["table"]) == len(arms) * len(tasks)
    for cell in data["table"]:
        assert cell["seeds"] == [0, 1, 2] and len(cell["values"]) == 3
        assert cell["low"] <= cell["mean"] <= cell["high"] and cell["std"] >= 0
    assert len(data["runs"]) == 15
    for run in data["runs"]:
        assert set(run["scores"]) == set(tasks) and run["steps"] == exp.MODES["smoke"].steps
        assert run["curve"][0][0] == 0 and run["curve"][-1][0] == run["steps"]
        assert run["trainable_parameters"]["vision"] > 0 and run["trainable_parameters"]["lm"] > 0
        assert (run["trainable_parameters"]["design"] > 0) == (run["arm"] in ("mask_tokens", "mask_encoder"))
    assert "| mask_tokens |" in data["table_markdown"]
    assert (
        data["mark_locality"]["objects_inside"] > 100 and 0 < data["mark_locality"]["without_mark_in_their_patches"] < 1
    )
    assert data["base"]["grounding"]["examples"] > 0

    saved, png = tmp_path / "report.json", tmp_path / "bars.png"
    saved.write_text(json.dumps(data))
    result = CliRunner().invoke(exp.app, ["--replot", str(saved), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 5000

    again = exp.run_experiment(replace(settings, seeds=(0,), arms=("text",)), log=lambda _: None)
    assert again.base.reused  # the base model in --work-dir is not pretrained twice
    init, base = data["position_reading"]
    assert (init["model"], base["model"]) == ("init", "base") and init["ground_first_digits"] == 0.0
    assert 0.02 * 0.5 < init["position_rms"] < 0.02 * 2 < 0.2 < init["patch_rms"]  # transformers' default init
    assert 0.25 < init["token_column_probe"] <= 1 and 0 <= base["ground_first_digits_majority"] <= 1


def test_position_options_change_only_the_base_model(exp, tmp_path):
    table = exp.sincos_positions(8, 32)  # (64, 32)
    assert table.shape == (64, 32) and torch.equal(table[:8, :16], table[8:16, :16])  # columns: same per row
    assert torch.equal(table[::8, 16:], table[1::8, 16:]) and (table[1:8, 0] > table[:7, 0]).all()  # monotonic in x
    settings = exp.Settings(
        mode="smoke", budget=exp.MODES["smoke"], seeds=(0,), arms=("set_of_mark",), tasks=("relation",),
        work_dir=tmp_path, position_pretraining=True, position_init=True,
    )  # fmt: skip
    report = exp.run_experiment(settings, log=lambda _: None)
    assert report.base.steps == round(exp.MODES["smoke"].pretrain_steps * 3 / 2)
    assert set(report.base.curve[-1][1]) == {"describe", "ground", "position"}
    assert report.base.folder.endswith("-position-sincos")
    init = report.position_reading[0]
    assert init.position_rms == pytest.approx(init.patch_rms, rel=0.05)  # the table is at the patch scale
    assert init.token_column_probe == 1.0 and init.token_row_probe == 1.0  # and every token's cell is readable
    with pytest.raises(ValueError, match="position-init"):
        exp.base_model(replace(settings, model="tiny-random:smolvlm"), tmp_path, lambda _: None)


def test_lm_layers_builds_a_deeper_tiny_model_in_its_own_folder(exp, tmp_path):
    from transformers import AutoConfig

    default, deeper = exp.Settings(), exp.Settings(lm_layers=4)
    assert exp._tiny_name(default) == "tiny-smolvlm-128px-seed0" and exp._tiny_name(deeper).endswith("-lm4")
    exp.build_tiny(tmp_path / "deeper", deeper)
    config = AutoConfig.from_pretrained(tmp_path / "deeper")
    assert config.text_config.num_hidden_layers == 4 and config.vision_config.num_hidden_layers == 2


def test_cli_takes_a_model_by_hub_id_or_folder(exp, tmp_path, tiny_vlm_dir):
    out = tmp_path / "out.json"
    args = ["--smoke", "--model", "tiny-random:smolvlm", "--seeds", "0", "--arms", "text,mask_encoder", "--no-cache"]
    result = CliRunner().invoke(exp.app, [*args, "--tasks", "colour,motion", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["model"] == "tiny-random:smolvlm" and data["base"] is None  # a checkpoint is not pretrained again
    assert [c["arm"] for c in data["table"]] == ["text", "text", "mask_encoder", "mask_encoder"]
    assert asdict(exp.MODES["smoke"]) == data["budget"] and data["cache"] is False
