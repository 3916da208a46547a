"""The model card (README.md) written beside an exported checkpoint, numbers taken from the evaluation."""
from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

DATA_CITATION = ("Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of "
                 "multi-source dermatoscopic images of common pigmented skin lesions. Sci Data 5, 180161 "
                 "(2018). doi:10.1038/sdata.2018.161")


def _fmt_ci(m: dict, key: str) -> str:
    iv = (m.get("ci95") or {}).get(key)
    return f"{m[key]:.3f} (95% CI {iv[0]:.3f}–{iv[1]:.3f})" if iv else f"{m[key]:.3f}"


def _phases_run(args: dict) -> str:
    ran = [name for name, key in (("classifier head", "head_epochs"), ("last stage", "stage_epochs"),
                                  ("full network", "epochs")) if (args.get(key) or 0) > 0]
    return f"{len(ran)} phase{'s' if len(ran) != 1 else ''}: " + ", ".join(ran)


def init_lineage(init: str) -> str:
    """`name` (what it was): how the card names an --init checkpoint, frozen into config.json at training."""
    return f"`{Path(init).name}`{_lineage(init)}"


def _lineage(init: str) -> str:
    """What an --init checkpoint was, read from its own config.json: " (resnet18, input 112×144, ...)"."""
    try:
        config = json.loads((Path(init) / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    training, size = config.get("training") or {}, (config.get("pretrained_cfg") or {}).get("input_size")
    facts = [config.get("architecture", "")]
    if size:
        facts.append(f"input {size[1]}×{size[2]}")
    if training.get("init_lineage"):  # written when it was trained, so a folder reused since cannot change it
        facts.append(f"itself started from {training['init_lineage']}")
    else:
        facts.append(f"itself started from `{Path(training['init']).name}`" if training.get("init") else
                     "from ImageNet weights" if training.get("pretrained") else "trained from scratch")
    if training.get("best_epoch"):
        facts.append(f"best epoch {training['best_epoch']}")
    if training.get("val_balanced_accuracy") is not None:
        facts.append(f"validation balanced accuracy {training['val_balanced_accuracy']:.3f}")
    return " (" + ", ".join(f for f in facts if f) + ")"


def render_card(results: dict, args: dict, arch: str, sizes: dict, training: dict | None = None,
                plots: list[str] = ()) -> str:
    """training: the config.json "training" block (best epoch and its validation balanced accuracy);
    plots: test-split figures beside the card (paths relative to it)."""
    test, val = results["test"], results["val"]
    training = training or {}
    evals = [EvalResult(task_type="image-classification", dataset_type="ham10000", dataset_name=
                        "HAM10000 (lesion-grouped test split)", metric_type=key, metric_name=name,
                        metric_value=round(value, 4))
             for key, name, value in [
                 ("balanced_accuracy", "Balanced accuracy", test["balanced_accuracy"]),
                 ("roc_auc", "Macro AUC (one-vs-rest)", test["macro_auc"]),
                 ("accuracy", "Accuracy", test["accuracy"]),
                 ("recall", "Melanoma sensitivity", test["per_class"].get("mel", {}).get("sensitivity")),
                 ("ece", "Expected calibration error (15 bins)", test["ece"])]
             if value is not None]  # a metric that could not be measured (no such class in test) is left out
    data = ModelCardData(library_name="timm", license="cc-by-nc-4.0", tags=["image-classification", "timm",
                         "dermatology", "ham10000", "grad-cam"], datasets=["ham10000"],
                         model_name=f"ham10000-{arch}", eval_results=evals, pipeline_tag="image-classification")
    rows = "\n".join(
        f"| {name} | {c['n']} | {c['sensitivity']:.3f} | {c['specificity']:.3f} | "
        f"{c['auc']:.3f} |" if c["auc"] is not None and c["sensitivity"] is not None else f"| {name} | {c['n']} | – | – | – |"
        for name, c in test["per_class"].items())
    phases = _phases_run(args)
    if args.get("init"):
        recipe = f"from the checkpoint {training.get('init_lineage') or init_lineage(args['init'])}, {phases}"
    elif args.get("pretrained"):
        recipe = f"from ImageNet weights (timm), {phases}"
    else:
        recipe = "from scratch (no pretrained weights could be reached), full network"
    figures = "".join(f"![{Path(p).stem.replace('_', ' ')}]({p})\n" for p in plots) + ("\n" if plots else "")
    size = args.get("img_size") or []
    size = f"{size[0]}×{size[-1]} (height×width)" if size else "the architecture's default size"
    best = (f"best epoch {training['best_epoch']}, validation balanced accuracy "
            f"{training['val_balanced_accuracy']:.3f}" if training.get("best_epoch") else "best epoch in `config.json`")
    return f"""---
{data.to_yaml()}
---

# HAM10000 skin-lesion classifier ({arch})

A {arch} trained {recipe}, to sort a dermoscopic image into the 7 HAM10000 classes:
mel, akiec, bcc, vasc, df, bkl, nv. **Research and education software: not a medical device and
not a diagnosis.**

## Data and licence
HAM10000: {DATA_CITATION}. Released for non-commercial use with attribution (CC BY-NC 4.0); these
weights are derived from it and carry the same restriction.

## Split
Lesion-grouped and stratified by diagnosis (scikit-learn `StratifiedGroupKFold`, seed {args.get('seed')}):
no lesion has images in two splits. Images: train {sizes['train']}, validation {sizes['val']},
test {sizes['test']}. `split.csv` beside this card lists every image's split. Early stopping and the
temperature were chosen on validation only; the test split was used once, for the numbers below.

## Training recipe
Input {size} pixels (crop_pct 1.0, bicubic, ImageNet mean/std; the facts are in `config.json`'s
`pretrained_cfg`). AdamW, cosine schedule, weight EMA {args.get('ema')}, label smoothing
{args.get('label_smoothing')}, batch {args.get('batch_size')}. Imbalance: classes sampled ∝ n^{args.get('sampling_power')}
and a logit-adjusted loss for that sampling prior, so raw outputs target balanced accuracy.
Augmentation: random resized crop, any rotation, both flips, mild colour jitter. Early stopping on
validation balanced accuracy ({best}, judged on the EMA weights that are exported).
Per-epoch numbers: `metrics.csv`.

## Test-split results (n = {test['n']} images)
| metric | value |
|---|---|
| balanced accuracy | {_fmt_ci(test, 'balanced_accuracy')} |
| macro AUC (one-vs-rest) | {_fmt_ci(test, 'macro_auc')} |
| accuracy | {test['accuracy']:.3f} |
| ECE (15 bins) | {test['ece']:.3f} |

Intervals: percentile bootstrap over lesions ({test['ci95'].get('n_boot')} resamples).

| class | n | sensitivity | specificity | AUC |
|---|---|---|---|---|
{rows}

{figures}Validation: balanced accuracy {_fmt_ci(val, 'balanced_accuracy')}, macro AUC {_fmt_ci(val, 'macro_auc')}.

## Calibration
Temperature {results['temperature']:.3f}, fitted on the validation split (NLL, LBFGS) and stored in
`config.json`; validation ECE {results['ece_val_before']:.3f} before, {val['ece']:.3f} after; test ECE
{test['ece']:.3f}.

## Intended use and limitations
- Research, teaching and demonstration of explainable image classification. Not for diagnosis,
  triage or any clinical decision.
- Dermoscopic images only; clinical (non-dermoscopic) photos are out of distribution.
- HAM10000 comes from two centres (Vienna, Queensland) and mostly lightly pigmented skin; darker
  skin types are under-represented and performance on them is unknown.
- No clinical context (history, age, evolution) is used. The test split is from the same sources as
  training, so numbers on other populations and devices are expected to be lower.
- Grad-CAM maps show where the evidence for a class lies at the last feature map's resolution;
  they are not segmentations and do not prove the reasoning is clinically sound.
"""
