"""Publishing a finished dataset folder on the Hugging Face Hub (parquet shards + card)."""

from __future__ import annotations

import json
from pathlib import Path

HUB_PATTERNS = ("README.md", "data/*.parquet", "errors.jsonl")


def push_to_hub(
    out: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    revision: str | None = None,
) -> str:
    """Upload ``out``'s card, parquet shards and errors file to the dataset repo ``repo_id``; returns its URL.

    Only a finished build is uploaded (``build.json`` records ``finished``), so a half-built dataset cannot
    be published by mistake. The hub layout (``data/*.parquet`` + a card whose YAML names them) is what
    ``datasets.load_dataset(repo_id)`` reads.
    """
    out = Path(out)
    build_file = out / "build.json"
    if not build_file.exists() or "finished" not in json.loads(build_file.read_text()):
        raise ValueError(
            f"{out} is not a finished segvlm dataset (no finished build.json); "
            "run the build command again until it completes, then push"
        )
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(out),
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        allow_patterns=list(HUB_PATTERNS),
        commit_message="Upload segvlm dataset",
    )
    return f"https://huggingface.co/datasets/{repo_id}"
