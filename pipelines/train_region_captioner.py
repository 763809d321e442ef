"""Train a mask-aware VLM on region captions.

    python pipelines/train_region_captioner.py --config configs/train/tiny-pooled.yaml
    accelerate launch --num_processes 2 pipelines/train_region_captioner.py --config configs/train/<x>.yaml

The same command as ``segvlm train``; the YAML maps onto :class:`segvlm.training.TrainConfig`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from segvlm.training.cli import train_command  # noqa: E402

app = typer.Typer(add_completion=False, help=__doc__)
app.command()(train_command)

if __name__ == "__main__":
    app()
