"""Publish a trained checkpoint folder to the Hugging Face Hub as a timm model repository.

    python -m training.push_to_hub runs/NAME --repo-id ORG/NAME [--private] [--dry-run]

The token comes from the environment (HF_TOKEN) or a saved `hf auth login`, never from the command
line, where it would end up in the shell history. Only what a user of the model needs is uploaded:
weights, config, model card, the split, the evaluation and its plots; the training state (optimizer moments)
and train_args.json (local paths) stay home.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.checkpoint import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, ModelLoadError, resolve

REQUIRED = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
OPTIONAL = ("split.csv", "evaluation.json", "metrics.csv")


class PushError(RuntimeError):
    """The folder or the arguments cannot be published; the message says why and how to fix it."""


def files_to_upload(directory: Path) -> list[str]:
    """The folder's files that would be published, in upload order; raises PushError if one is missing."""
    directory = Path(directory)
    try:
        resolve(directory)  # the same checks the app makes before loading
    except ModelLoadError as exc:
        raise PushError(str(exc)) from None
    if not (directory / CARD_NAME).is_file():
        raise PushError(f"{directory} has no {CARD_NAME} model card; it is written at the end of "
                        "`python -m training.train` (or by `python -m training.finalize`).")
    plots = sorted(p.relative_to(directory).as_posix() for p in (directory / "plots").glob("*.png"))
    return list(REQUIRED) + [name for name in OPTIONAL if (directory / name).is_file()] + plots


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PushError(f"'{repo_id}' is not a Hub repo id: {exc}") from None
    if "/" not in repo_id:
        raise PushError(f"'{repo_id}' needs an owner: use ORG/NAME or USER/NAME.")
    return repo_id


def push(directory: Path, repo_id: str, private: bool = False, revision: str | None = None,
         commit_message: str = "Upload skin-lesion classifier") -> str:
    """Create the repo if needed and upload the files; returns the commit URL."""
    from huggingface_hub import HfApi, get_token

    files = files_to_upload(directory)
    check_repo_id(repo_id)
    if not get_token():
        raise PushError("No Hugging Face token: set HF_TOKEN to a token with write access "
                        "(https://huggingface.co/settings/tokens) or run `hf auth login`.")
    api = HfApi()  # token=None: huggingface_hub reads HF_TOKEN or the saved login itself
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(directory),
                               allow_patterns=files, revision=revision, commit_message=commit_message)
    return getattr(commit, "commit_url", str(commit))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path, help="checkpoint folder written by training.train")
    p.add_argument("--repo-id", required=True, help="ORG/NAME of the model repository on the Hub")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", help="branch to commit to (default: main)")
    p.add_argument("--message", default="Upload skin-lesion classifier", help="commit message")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded; no network, no token")
    a = p.parse_args(argv)
    try:
        check_repo_id(a.repo_id)
        files = files_to_upload(a.directory)
        if a.dry_run:
            print(f"would upload to https://huggingface.co/{a.repo_id}:")
            for name in files:
                print(f"  {name}  ({(a.directory / name).stat().st_size:,} bytes)")
            return 0
        url = push(a.directory, a.repo_id, a.private, a.revision, a.message)
    except PushError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"published {len(files)} files: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
