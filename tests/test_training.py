"""The training pipeline end to end on a tiny synthetic HAM10000-layout dataset (70 images, 35 lesions):
the real `python -m training.train` command line, its export loaded by the app, the lesion-grouped
split, DDP on 2 CPU processes, --resume, bad-data errors, and publishing to the Hub (offline)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from conftest import write_tiny_checkpoint
from data_factory import synthetic_records, write_ham_dataset, write_metadata
from model import Classifier, resolve
from model.classes import CODES
from test_evaluate import assert_complete_metrics
from training.data import DataError, grouped_split, load_records, read_split, write_split

REPO = Path(__file__).resolve().parent.parent
TEST_PLOTS = ("plots/confusion_matrix.png", "plots/reliability.png", "plots/roc.png")  # drawn by finalize
# Small and quick: a 0.5M-parameter timm ResNet at 48 px, batch 8, one thread (a second one only
# spins on a model this small).
QUICK = ["--arch", "test_resnet", "--img-size", "48", "--batch-size", "8", "--bootstrap", "50",
         "--head-lr", "1e-2", "--stage-lr", "3e-3", "--lr", "1e-3", "--threads", "1"]


def run_train(*args, processes: int = 1) -> subprocess.CompletedProcess:
    if processes > 1:  # torchrun is torch.distributed.run; --standalone picks a free local port
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    else:
        launcher = []
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, *launcher, "-m", "training.train", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)


def succeeded(result: subprocess.CompletedProcess) -> bool:
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-5000:], sep="\n")
    return result.returncode == 0


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def metric_rows(out: Path) -> list[dict]:
    return read_csv(out / "metrics.csv")


@pytest.fixture(scope="module")
def ham_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ham")
    write_ham_dataset(root, per_class=10)
    return root


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory) -> Path:
    """A local starting checkpoint (its class order differs from the training's)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("init"), input_size=(3, 48, 48))


@pytest.fixture(scope="module")
def smoke(ham_dir, init_dir, tmp_path_factory):
    """One real training run: --init, so all three phases run, one epoch each."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    result = run_train("--data-dir", ham_dir, "--out", out, "--init", init_dir, *QUICK,
                       "--head-epochs", 1, "--stage-epochs", 1, "--epochs", 1)
    return result, out


def test_smoke_run_trains_three_phases_and_the_loss_falls(smoke):
    result, out = smoke
    assert succeeded(result)
    assert "1 process(es) on cpu" in result.stdout
    rows = metric_rows(out)
    assert [r["phase"] for r in rows] == ["head", "stage", "full"]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0]
    for r in rows:
        assert 0.0 <= float(r["val_balanced_accuracy"]) <= 1.0


def test_export_loads_through_the_apps_loader(smoke, ham_dir):
    result, out = smoke
    assert succeeded(result)
    classifier = Classifier(resolve(out), device="cpu")
    assert classifier.labels == CODES  # the training's order, written into config.json
    config = json.loads((out / "config.json").read_text())
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert classifier.temperature == pytest.approx(evaluation["temperature"])  # fitted on validation
    assert config["pretrained_cfg"]["input_size"] == [3, 48, 48]
    train_args = json.loads((out / "train_args.json").read_text())
    assert config["training"]["pretrained"] is False and config["training"]["init"] == train_args["init"]
    image = next(ham_dir.rglob("*.jpg"))
    assert classifier.predict(image).probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    # timm itself loads it from the folder (the Hub format).
    import timm
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.num_classes == 7


def test_evaluation_and_model_card_are_written(smoke):
    result, out = smoke
    assert succeeded(result)
    evaluation = json.loads((out / "evaluation.json").read_text())
    for part in ("val", "test"):
        assert_complete_metrics(evaluation[part], list(CODES))
    assert "ece_val_before" in evaluation
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: timm" in card
    for needle in ("Tschandl", "CC BY-NC", "not a medical device", "Lesion-grouped", "split.csv",
                   f"{evaluation['test']['balanced_accuracy']:.3f}", f"Temperature {evaluation['temperature']:.3f}",
                   "from the checkpoint"):
        assert needle in card, needle
    assert "ImageNet weights (timm)" not in card  # it started from --init, not from the Hub
    for plot in TEST_PLOTS:  # the test-split figures exist and the card shows them
        assert (out / plot).stat().st_size > 1000 and f"]({plot})" in card


def test_card_says_what_the_run_started_from_even_after_that_folder_is_gone(smoke, init_dir, tmp_path):
    """--init folders get reused (default_model/ is replaced by the model trained from it): the lineage is
    frozen into config.json at training time, and the card is rendered from that."""
    from training.card import render_card

    result, out = smoke
    assert succeeded(result)
    config = json.loads((out / "config.json").read_text())
    lineage = config["training"]["init_lineage"]
    assert lineage.startswith(f"`{init_dir.name}`") and "input 48×48" in lineage
    assert lineage in (out / "README.md").read_text()
    args = {**json.loads((out / "train_args.json").read_text()), "init": str(tmp_path / "reused-or-deleted")}
    card = render_card(json.loads((out / "evaluation.json").read_text()), args, config["architecture"],
                       {"train": 1, "val": 1, "test": 1}, config["training"])
    assert lineage in card and "reused-or-deleted" not in card


def test_split_beside_the_checkpoint_is_grouped_and_reproducible(smoke, ham_dir):
    result, out = smoke
    assert succeeded(result)
    rows = read_csv(out / "split.csv")
    assert len(rows) == 70 and {r["split"] for r in rows} == {"train", "val", "test"}
    splits_of_lesion = defaultdict(set)
    for r in rows:
        splits_of_lesion[r["lesion_id"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of_lesion.values())
    assert read_split(out / "split.csv") == grouped_split(load_records(ham_dir), seed=0)


def test_evaluate_command_on_the_exported_model(smoke, ham_dir, tmp_path, capsys):
    from training.evaluate import main
    result, out = smoke
    assert succeeded(result)
    test_ids = {r["image_id"] for r in read_csv(out / "split.csv") if r["split"] == "test"}
    images = tmp_path / "images"
    images.mkdir()
    for path in ham_dir.rglob("*.jpg"):
        if path.stem in test_ids:
            (images / path.name).write_bytes(path.read_bytes())
    rows = [r for r in read_csv(ham_dir / "HAM10000_metadata.csv") if r["image_id"] in test_ids]
    metadata = write_metadata(tmp_path / "test.csv", rows)
    report, plots = tmp_path / "eval.json", tmp_path / "plots"
    assert main(["--model", str(out), "--metadata", str(metadata), "--images", str(images),
                 "--out", str(report), "--plots", str(plots), "--bootstrap", "50"]) == 0
    metrics = json.loads(report.read_text())
    assert_complete_metrics(metrics, list(CODES))
    assert metrics["n"] == len(test_ids)
    # The test split scored by evaluate equals what training's own final evaluation found.
    assert metrics["balanced_accuracy"] == pytest.approx(
        json.loads((out / "evaluation.json").read_text())["test"]["balanced_accuracy"])
    for name in ("confusion_matrix.png", "reliability.png", "roc.png"):
        assert (plots / name).stat().st_size > 1000
    assert "balanced accuracy" in capsys.readouterr().out


# ---- resume and DDP -------------------------------------------------------------------------------

def test_resume_continues_where_the_run_stopped(ham_dir, init_dir, tmp_path):
    out = tmp_path / "run"
    # A run that stops after the head and last-stage phases...
    first = run_train("--data-dir", ham_dir, "--out", out, "--init", init_dir, *QUICK,
                      "--head-epochs", 1, "--stage-epochs", 1, "--epochs", 0)
    assert succeeded(first)
    assert [r["phase"] for r in metric_rows(out)] == ["head", "stage"]
    split_before = (out / "split.csv").read_bytes()
    # ...continued with the full-network phase: nothing is redone, the split is kept.
    second = run_train("--data-dir", ham_dir, "--out", out, "--init", init_dir, *QUICK,
                       "--head-epochs", 1, "--stage-epochs", 1, "--epochs", 1, "--resume")
    assert succeeded(second)
    assert "resumed at phase full, epoch 0" in second.stdout
    assert [r["phase"] for r in metric_rows(out)] == ["head", "stage", "full"]
    assert (out / "split.csv").read_bytes() == split_before
    assert json.loads((out / "train_state.json").read_text())["phase"] == 3
    assert Classifier(resolve(out), device="cpu").labels == CODES


def test_distributed_data_parallel_on_two_cpu_processes(ham_dir, tmp_path):
    out = tmp_path / "ddp"
    result = run_train("--data-dir", ham_dir, "--out", out, "--no-pretrained", *QUICK, "--epochs", 1,
                       processes=2)
    assert succeeded(result)
    assert "2 process(es) on cpu (DistributedDataParallel)" in result.stdout
    rows = metric_rows(out)
    assert [r["phase"] for r in rows] == ["full"]  # from scratch: one phase, logged once (rank 0)
    assert Classifier(resolve(out), device="cpu").predict(next(ham_dir.rglob("*.jpg"))).labels == CODES


# ---- bad data -------------------------------------------------------------------------------------

@pytest.fixture
def broken_dir(tmp_path) -> Path:
    """Three problems at once: a missing image, an unknown dx and an image listed twice."""
    root = tmp_path / "broken"
    rows = write_ham_dataset(root, per_class=2)
    next(root.rglob(f"{rows[0]['image_id']}.jpg")).unlink()
    rows[3]["dx"] = "melanoma"
    rows.append(dict(rows[5]))
    write_metadata(root / "HAM10000_metadata.csv", rows)
    return root


def test_bad_data_problems_are_all_listed(broken_dir):
    with pytest.raises(DataError) as error:
        load_records(broken_dir)
    message = str(error.value)
    assert message.startswith("3 problem(s)")
    assert "line 2: image ISIC_9000000 not found" in message
    assert "line 5: unknown dx 'melanoma' for ISIC_9000003" in message and "known: mel, akiec" in message
    assert "line 16: image_id ISIC_9000005 listed twice" in message


@pytest.mark.parametrize("content, expected", [
    ("image;dx;lesion_id\nISIC_1;mel;HAM_1\n", "missing column(s) image_id, dx, lesion_id"),
    ("lesion_id,image_id\nHAM_1,ISIC_1\n", "missing column(s) dx"),
    ("lesion_id,image_id,dx\n", "no rows"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00binary", "Cannot read"),
], ids=["wrong-delimiter", "no-dx-column", "empty", "not-text"])
def test_malformed_metadata_is_a_clear_error(tmp_path, content, expected):
    path = tmp_path / "HAM10000_metadata.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_records(tmp_path)


def test_training_refuses_bad_data_before_it_starts(broken_dir, tmp_path):
    out = tmp_path / "never"
    result = run_train("--data-dir", broken_dir, "--out", out, "--no-pretrained", *QUICK, "--epochs", 1)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "error: 3 problem(s)" in result.stderr and "unknown dx 'melanoma'" in result.stderr
    assert not (out / "metrics.csv").exists() and not (out / "model.safetensors").exists()


# ---- the lesion-grouped split ---------------------------------------------------------------------

LESIONS = {"mel": 60, "akiec": 30, "bcc": 40, "vasc": 20, "df": 20, "bkl": 70, "nv": 400}


@pytest.fixture(scope="module")
def many_records():
    return synthetic_records(LESIONS, seed=0)


def test_no_lesion_is_in_two_splits(many_records):
    split = grouped_split(many_records, seed=0)
    assert set(split) == {r.image_id for r in many_records}
    where = defaultdict(set)
    for r in many_records:
        where[r.lesion_id].add(split[r.image_id])
    assert all(len(s) == 1 for s in where.values())


def test_split_is_stratified_by_diagnosis(many_records):
    split = grouped_split(many_records, seed=0)
    sizes = Counter(split.values())
    assert sizes["train"] / len(split) == pytest.approx(0.70, abs=0.04)
    assert sizes["val"] / len(split) == pytest.approx(0.15, abs=0.03)
    assert sizes["test"] / len(split) == pytest.approx(0.15, abs=0.03)
    for dx in LESIONS:
        of_class = [split[r.image_id] for r in many_records if r.dx == dx]
        share = Counter(of_class)
        for part, expected in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
            assert share[part] / len(of_class) == pytest.approx(expected, abs=0.1), (dx, part)


def test_split_is_seeded_and_reproducible(many_records, tmp_path):
    first = grouped_split(many_records, seed=0)
    assert grouped_split(many_records, seed=0) == first
    assert grouped_split(many_records, seed=1) != first
    write_split(tmp_path / "split.csv", many_records, first)
    assert read_split(tmp_path / "split.csv") == first


# ---- publishing to the Hub (offline: the network methods are replaced) ------------------------------

@pytest.fixture
def hub_calls(monkeypatch, tmp_path):
    """Record HfApi's network calls instead of making them; no token anywhere unless a test sets one."""
    import huggingface_hub
    import huggingface_hub.constants as constants

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw, self.token)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: calls.append(("upload_folder", kw["repo_id"], kw, self.token)))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    return calls


def test_push_uploads_exactly_the_model_files(smoke, hub_calls, monkeypatch, capsys):
    from training.push_to_hub import main
    result, out = smoke
    assert succeeded(result)
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    assert main([str(out), "--repo-id", "test-org/skin-lesions", "--private"]) == 0
    (create, repo, create_kw, _), (upload, repo2, upload_kw, _) = hub_calls
    assert (create, repo, upload, repo2) == ("create_repo", "test-org/skin-lesions", "upload_folder",
                                             "test-org/skin-lesions")
    assert create_kw["private"] is True and create_kw["exist_ok"] is True
    assert Path(upload_kw["folder_path"]) == out
    assert upload_kw["allow_patterns"] == ["config.json", "model.safetensors", "README.md",
                                           "split.csv", "evaluation.json", "metrics.csv",
                                           *TEST_PLOTS]
    # Training state and local paths exist in the folder but are not published.
    assert (out / "train_state.safetensors").exists() and (out / "train_args.json").exists()
    assert "published 9 files" in capsys.readouterr().out


def test_push_dry_run_lists_the_files_without_a_token(smoke, hub_calls, capsys):
    from training.push_to_hub import main
    result, out = smoke
    assert main([str(out), "--repo-id", "test-org/skin-lesions", "--dry-run"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == ["config.json", "model.safetensors", "README.md", "split.csv", "evaluation.json",
                      "metrics.csv", *TEST_PLOTS]
    assert hub_calls == []


def test_push_refuses_without_token_bad_repo_or_bad_folder(smoke, hub_calls, tmp_path, capsys):
    from training.push_to_hub import main
    result, out = smoke
    assert main([str(out), "--repo-id", "test-org/skin-lesions"]) == 2
    assert "No Hugging Face token: set HF_TOKEN" in capsys.readouterr().err
    assert main([str(out), "--repo-id", "not a repo"]) == 2
    assert "is not a Hub repo id" in capsys.readouterr().err
    assert main([str(out), "--repo-id", "no-owner"]) == 2
    assert "needs an owner" in capsys.readouterr().err
    assert main([str(tmp_path), "--repo-id", "test-org/skin-lesions", "--dry-run"]) == 2
    assert "missing config.json, model.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(out)])  # --repo-id is required
    assert "--repo-id" in capsys.readouterr().err
    assert hub_calls == []
