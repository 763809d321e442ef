"""``segvlm train``: train a mask-aware VLM on region captions from a YAML config.

:func:`train_command` is a plain function whose defaults are typer options, so an app registers it with
``app.command("train")(train_command)``; ``pipelines/train_region_captioner.py`` does exactly that.
Under ``accelerate launch`` every process runs the same command.
"""

from __future__ import annotations

import typer

from segvlm.quiet import command as quiet_command

_CONFIG_HELP = (
    "a shipped config by name (tiny-pooled, tiny-encoder, smolvlm-lora-pooled; `segvlm presets` lists them) "
    "or a YAML file mapped onto TrainConfig"
)


@quiet_command
def train_command(
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    output_dir: str | None = typer.Option(None, "--output-dir", "-o", help="override output_dir"),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="override optim.max_steps"),
    seed: int | None = typer.Option(None, "--seed", help="override seed"),
    mixed_precision: str | None = typer.Option(None, "--mixed-precision", help="auto, no, bf16 or fp16"),
    no_resume: bool = typer.Option(False, "--no-resume", help="start fresh even if output_dir has checkpoints"),
) -> None:
    """Train the mask tokenizer (and optionally LoRA or the LM) on region captions; resume when possible."""
    import json
    from dataclasses import asdict

    from segvlm.errors import ConfigError
    from segvlm.training.config import load_train_config
    from segvlm.training.trainer import Trainer

    overrides: dict = {}
    if output_dir is not None:
        overrides["output_dir"] = output_dir
    if max_steps is not None:
        overrides.setdefault("optim", {})["max_steps"] = max_steps
    if seed is not None:
        overrides["seed"] = seed
    if mixed_precision is not None:
        overrides["mixed_precision"] = mixed_precision
    if no_resume:
        overrides["resume"] = False
    try:
        cfg = load_train_config(config, overrides)
    except (ConfigError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    try:
        trainer = Trainer(cfg, report=True)
    except (ValueError, FileNotFoundError) as error:  # a dataset that is missing, a model that cannot load...
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    result = trainer.train()
    if trainer.accelerator.is_main_process:
        final = asdict(result.final) if result.final else None
        typer.echo(
            json.dumps(
                {
                    "steps": result.steps,
                    "resumed_from": result.resumed_from,
                    "seconds": round(result.seconds, 1),
                    "final": final,
                    "output_dir": result.output_dir,
                },
                indent=2,
            )
        )
