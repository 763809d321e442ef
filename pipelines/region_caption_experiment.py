"""What does the mask modality give a VLM? Train a tiny VLM three ways and ask it for an object's colour.

    python pipelines/region_caption_experiment.py --quick --json out.json [--plot docs/experiment_region_caption.png]
    python pipelines/region_caption_experiment.py --smoke --json out.json     # a few steps, for tests

Every scene (:mod:`segvlm.scenes`) holds ``n_objects`` shapes of distinct colours; each example designates
one of them and the answer is its colour word. The same tiny random-init SmolVLM is trained in three arms
that differ only in how the designated object reaches the model:

* ``mask_tokens``: ``MaskPooledTokenizer`` region embeddings (vision features pooled under the mask);
* ``overlay``: ``SetOfMarkTokenizer`` draws mark 1 on the object, the prompt says "mark 1";
* ``no_region``: nothing; the prompt asks about "the object" (chance is 1 / n_objects at best).

All arms train the same language model and connector from their random init, with the vision tower frozen
(random features); the mask-token arm also trains its projector. Accuracy is the argmax over the first
tokens of the colour words (unique first letters) at the answer position, on held-out scenes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

app = typer.Typer(add_completion=False, help=__doc__)


@dataclass(frozen=True)
class Arm:
    """One way of handing the designated region to the model."""

    name: str
    design: str
    use_regions: bool
    prompt: str
    design_args: dict = field(default_factory=dict)


ARMS = (
    Arm("mask_tokens", "pooled", True, "What colour is {region1}?", {"feature_layers": [0]}),
    Arm("overlay", "set_of_mark", True, "What colour is {region1}?"),
    Arm("no_region", "set_of_mark", False, "What colour is the object?"),
)


@dataclass
class Budget:
    """Sizes of one experiment mode."""

    train_scenes: int
    eval_scenes: int
    steps: int
    batch_size: int
    eval_every: int
    lr: float = 3e-3
    warmup: int = 30


MODES = {
    "quick": Budget(train_scenes=1500, eval_scenes=80, steps=800, batch_size=32, eval_every=50),
    "smoke": Budget(train_scenes=6, eval_scenes=2, steps=3, batch_size=4, eval_every=2, warmup=1),
}


@dataclass
class ArmResult:
    """One arm's held-out accuracy curve and final numbers."""

    name: str
    accuracy: float
    loss: float
    curve: list[tuple[int, float]]
    seconds: float


# well-separated hues only: orange and purple sit between red/yellow and blue/magenta, and a 16 px patch
# that a mask only partly covers blurs exactly those differences
EXPERIMENT_COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "white")


def arm_config(arm: Arm, budget: Budget, data_dir: Path, out_dir: Path, seed: int, n_objects: int):
    """The :class:`TrainConfig` of one arm: same model, data, optimiser and LM budget in every arm."""
    from segvlm.training.config import train_config_from_dict

    return train_config_from_dict(
        {
            "model": {
                "model": "tiny-random:smolvlm",
                "mask_tokenizer": arm.design,
                "mask_tokenizer_args": dict(arm.design_args),
            },
            "trainable": {"mask_tokenizer": True, "connector": True, "lm": True, "vision": False},
            "data": {
                "train": str(data_dir / "train"),
                "eval": str(data_dir / "eval"),
                "prompt": arm.prompt,
                "use_regions": arm.use_regions,
                "prompt_without_regions": arm.prompt,
                "answer_field": "caption",
                "choices": list(EXPERIMENT_COLOURS),
            },
            "optim": {
                "lr": budget.lr,
                "warmup_steps": budget.warmup,
                "schedule": "cosine",
                "max_steps": budget.steps,
                "batch_size": budget.batch_size,
                "grad_accum": 1,
                "max_grad_norm": 1.0,
            },
            "output_dir": str(out_dir / arm.name),
            "seed": seed,
            "mixed_precision": "no",
            "eval_every": budget.eval_every,
            "save_every": 0,
            "keep_checkpoints": 1,
            "log_every": 10,
            "resume": False,
        }
    )


def run_arm(arm: Arm, budget: Budget, data_dir: Path, out_dir: Path, seed: int, n_objects: int) -> ArmResult:
    from segvlm.training.trainer import Trainer

    started = time.perf_counter()
    trainer = Trainer(arm_config(arm, budget, data_dir, out_dir, seed, n_objects))
    curve = [(0, trainer.evaluate().choice_accuracy or 0.0)]
    result = trainer.train()
    curve += [(e.step, e.choice_accuracy or 0.0) for e in result.history]
    final = result.final
    return ArmResult(
        name=arm.name,
        accuracy=final.choice_accuracy or 0.0,
        loss=final.loss,
        curve=curve,
        seconds=time.perf_counter() - started,
    )


def write_scenes(data_dir: Path, budget: Budget, seed: int, n_objects: int) -> None:
    """Train and held-out scenes (different seeds), saved once and read by every arm."""
    from segvlm.scenes import SceneConfig, scene_dataset

    config = SceneConfig(n_objects=n_objects, colours=EXPERIMENT_COLOURS, caption_template="{colour}")
    scene_dataset(budget.train_scenes, seed=seed, config=config).save_to_disk(str(data_dir / "train"))
    scene_dataset(budget.eval_scenes, seed=seed + 1000, config=config).save_to_disk(str(data_dir / "eval"))


def plot(results: list[ArmResult], n_objects: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for result in results:
        steps, accs = zip(*result.curve, strict=True)
        ax.plot(steps, accs, marker="o", markersize=3, label=f"{result.name} ({result.accuracy:.2f})")
    ax.axhline(1 / n_objects, color="grey", linestyle="--", linewidth=1, label=f"1/N = {1 / n_objects:.2f}")
    prior = 1 / len(EXPERIMENT_COLOURS)
    ax.axhline(prior, color="grey", linestyle=":", linewidth=1, label=f"1/colours = {prior:.2f}")
    ax.set_xlabel("training steps")
    ax.set_ylabel("held-out colour accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="the reported run (~5 min on 2 CPU cores)"),
    smoke: bool = typer.Option(False, "--smoke", help="a few steps on a few scenes, to check the script"),
    json_path: Path | None = typer.Option(None, "--json", help="write the results here"),
    plot_path: Path | None = typer.Option(None, "--plot", help="accuracy-vs-steps PNG"),
    seed: int = typer.Option(0, "--seed", help="seeds model init, data order and the train scenes"),
    n_objects: int = typer.Option(3, "--n-objects", min=2, max=9),
    steps: int | None = typer.Option(None, "--steps", min=1, help="override the mode's training steps"),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="scenes and runs go here (default: a temp dir)"),
    threads: int = typer.Option(
        1,
        "--threads",
        min=0,
        help="torch CPU threads (0 = torch's default); the "
        "tiny model's ops are too small to gain from more, and extra threads stall "
        "badly when other jobs share the cores",
    ),
) -> None:
    """Train the three arms and report held-out accuracy of each."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    if quick == smoke:
        raise typer.BadParameter("pass exactly one of --quick or --smoke")
    mode = "quick" if quick else "smoke"
    budget = MODES[mode]
    if steps is not None:
        budget = Budget(**{**asdict(budget), "steps": steps})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="region-caption-") as tmp:
        root = work_dir or Path(tmp)
        write_scenes(root / "data", budget, seed, n_objects)
        results = []
        for arm in ARMS:
            result = run_arm(arm, budget, root / "data", root / "runs", seed, n_objects)
            typer.echo(
                f"{arm.name:12s} accuracy {result.accuracy:.3f}  loss {result.loss:.3f}  ({result.seconds:.0f} s)"
            )
            results.append(result)
    seconds = time.perf_counter() - started
    by_name = {r.name: r for r in results}
    report = {
        "acc_mask_tokens": by_name["mask_tokens"].accuracy,
        "acc_overlay": by_name["overlay"].accuracy,
        "acc_no_region": by_name["no_region"].accuracy,
        "n_objects": n_objects,
        "train_steps": budget.steps,
        "seconds": round(seconds, 1),
        "seed": seed,
        "train_scene_seed": seed,
        "eval_scene_seed": seed + 1000,
        "mode": mode,
        "batch_size": budget.batch_size,
        "train_scenes": budget.train_scenes,
        "eval_examples": budget.eval_scenes * n_objects,
        "colours": list(EXPERIMENT_COLOURS),
        "metric": "argmax over the colour words' first tokens at the answer position, held-out scenes",
        "curves": {r.name: r.curve for r in results},
        "torch_threads": torch.get_num_threads(),
    }
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "curves"}, indent=2))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
    if plot_path is not None:
        plot(results, n_objects, plot_path, f"tiny SmolVLM, {n_objects} objects, seed {seed}")


if __name__ == "__main__":
    app()
