"""Train a HAM10000 classifier and export it as a timm Hub checkpoint the app can load.

    python -m training.train --data-dir DATA --out runs/resnet50 --pretrained       # design recipe
    python -m training.train --data-dir DATA --out runs/scratch --no-pretrained     # no internet
    torchrun --nproc_per_node 2 -m training.train --data-dir DATA --out runs/ddp    # several GPUs

Reads top to bottom: arguments, data and its lesion-grouped split, model, the phases (head only, last
stage, full network; from scratch only the last), per-epoch validation with early stopping on balanced
accuracy, then calibration and evaluation of the best checkpoint through the app's own predictor.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from model.classes import CODES
from model.inference import softmax
from model.preprocess import DataConfig

from . import augment
from .data import DataError, decode_all, grouped_split, load_records, read_split, write_split
from .export import export_checkpoint
from .metrics import classification_metrics

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data-dir", required=True, help="folder with HAM10000_metadata.csv and the images below it")
p.add_argument("--out", required=True, help="output folder: the exported checkpoint, split, logs")
p.add_argument("--arch", default="resnet50", help="any timm CNN name (default: resnet50)")
p.add_argument("--img-size", type=int, nargs="+", default=[224], help="input size: S or H W")
weights = p.add_mutually_exclusive_group()
weights.add_argument("--pretrained", dest="pretrained", action="store_true", default=True,
                     help="start from timm's ImageNet weights on the Hub (default; needs internet)")
weights.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="train from scratch")
weights.add_argument("--init", help="start from a local checkpoint folder (timm Hub format)")
p.add_argument("--head-epochs", type=int, default=3)
p.add_argument("--stage-epochs", type=int, default=5)
p.add_argument("--epochs", type=int, default=30, help="epochs of the full-network phase")
p.add_argument("--head-lr", type=float, default=1e-3)
p.add_argument("--stage-lr", type=float, default=3e-4)
p.add_argument("--lr", type=float, default=None, help="full-network lr (default 1e-4 fine-tuning, 2e-3 from scratch)")
p.add_argument("--weight-decay", type=float, default=0.05)
p.add_argument("--batch-size", type=int, default=64)
p.add_argument("--patience", type=int, default=8, help="epochs without a better val balanced accuracy before a phase stops")
p.add_argument("--sampling-power", type=float, default=0.5,
               help="sample class c with probability ∝ n_c^power (0: balanced, 1: natural)")
p.add_argument("--label-smoothing", type=float, default=0.1)
p.add_argument("--ema", type=float, default=0.998, help="weight EMA decay (0 disables)")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--half", action="store_true", help="export fp16 weights (half the file size)")
p.add_argument("--resume", action="store_true", help="continue from the training state in --out")
p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
args = p.parse_args()
if args.init:
    args.pretrained = False  # the weights come from --init, not from the Hub

# ---- devices and processes -------------------------------------------------------------------------
distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
if distributed:
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
main_process = rank == 0
cuda = torch.cuda.is_available()
device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
if args.threads:
    torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
log = print if main_process else (lambda *a, **k: None)
if main_process:  # the model card and `training.finalize` read these back
    (out / "train_args.json").write_text(json.dumps(vars(args), indent=1))

# ---- data: validated records, the lesion-grouped split, images decoded once --------------------------
try:
    records = load_records(args.data_dir)
except DataError as exc:  # every problem listed at once, before any training; no traceback
    sys.exit(f"error: {exc}")
split_path = out / "split.csv"
if args.resume and split_path.exists():
    split = read_split(split_path)
else:
    split = grouped_split(records, seed=args.seed)
    if main_process:
        write_split(split_path, records, split)
parts = {name: [r for r in records if split[r.image_id] == name] for name in ("train", "val", "test")}
log(f"{world} process(es) on {device}" + (" (DistributedDataParallel)" if distributed else ""))
log("split (images): " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()) + " — grouped by lesion_id")
labels = list(CODES)
img_size = tuple(args.img_size * 2 if len(args.img_size) == 1 else args.img_size[:2])
data_config = DataConfig((3, *img_size), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0, "bicubic")
# Train images are kept a little larger than the input so random crops keep detail; validation
# images are exactly what the app feeds the model (same function, same config).
cache_size = tuple(round(s * 1.15) for s in img_size)
train_images = torch.from_numpy(decode_all(parts["train"], cache_size, "decode train"))
train_y = torch.tensor([labels.index(r.dx) for r in parts["train"]])
val_views = decode_all(parts["val"], img_size, "decode val")
val_y = np.array([labels.index(r.dx) for r in parts["val"]])

# ---- model -------------------------------------------------------------------------------------------
import timm  # noqa: E402  (after the data checks, so bad data fails fast)
from timm.utils import ModelEmaV3  # noqa: E402

cfg_overlay = dict(input_size=(3, *img_size), crop_pct=1.0, interpolation="bicubic",
                   mean=data_config.mean, std=data_config.std)
lineage = None
if args.init:
    from .card import init_lineage
    lineage = init_lineage(args.init)  # what the init checkpoint is now: its folder may be reused later
    model = timm.create_model(f"local-dir:{args.init}", pretrained=True, num_classes=len(labels),
                              pretrained_cfg_overlay=cfg_overlay)
    # The init checkpoint may order its classes differently: row i of the head must score labels[i].
    init_labels = json.loads((Path(args.init) / "config.json").read_text()).get("label_names") or []
    if sorted(init_labels) == sorted(labels):
        fc = model.get_classifier()
        rows = torch.tensor([init_labels.index(c) for c in labels])
        with torch.no_grad():
            fc.weight.copy_(fc.weight[rows])
            if fc.bias is not None:
                fc.bias.copy_(fc.bias[rows])
    else:
        model.reset_classifier(len(labels))
else:
    model = timm.create_model(args.arch, pretrained=args.pretrained, num_classes=len(labels),
                              pretrained_cfg_overlay=cfg_overlay)
arch = model.pretrained_cfg.get("architecture", args.arch)
fine_tuning = bool(args.pretrained or args.init)
model = model.to(device, memory_format=torch.channels_last)
ema = ModelEmaV3(model, decay=args.ema) if args.ema else None

# The loss corrects for the sampling prior (logit adjustment, Menon et al. 2021), so the raw logits
# estimate class-balanced posteriors: the target of balanced accuracy.
counts = torch.bincount(train_y, minlength=len(labels)).clamp(min=1).double()
class_sampling = counts ** args.sampling_power
sample_weight = (class_sampling / counts)[train_y]
log_prior = (class_sampling / class_sampling.sum()).log().float().to(device)

# The last stage is the module of the last feature map ("layer4", "stages.3"): its own prefix only.
last_stage = model.feature_info[-1]["module"] + "." if hasattr(model, "feature_info") else None
head_ids = {id(q) for q in model.get_classifier().parameters()}
head_names = {n for n, q in model.named_parameters() if id(q) in head_ids}
phases = [("full", lambda n: True, args.epochs, args.lr or (1e-4 if fine_tuning else 2e-3))]
if fine_tuning:
    phases = [("head", lambda n: n in head_names, args.head_epochs, args.head_lr),
              ("stage", lambda n: n in head_names or (last_stage and n.startswith(last_stage)),
               args.stage_epochs, args.stage_lr)] + phases
phases = [ph for ph in phases if ph[2] > 0]


def evaluate_views(net, views: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Logits for preprocessed uint8 views, exactly as the app would normalise them."""
    from model.preprocess import normalize
    net.eval()
    outs = []
    with torch.inference_mode(), torch.autocast("cuda", enabled=cuda):
        for s in range(0, len(views), batch_size):
            x = torch.from_numpy(normalize(views[s:s + batch_size], data_config)).to(device)
            outs.append(net(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(outs).numpy()


def save_state(path_prefix: Path, state: dict, tensors: dict) -> None:
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, f"{path_prefix}.safetensors")
    Path(f"{path_prefix}.json").write_text(json.dumps(state, indent=1))


def weight_tensors() -> dict:
    """The model's and the EMA's weights, both needed to resume at any epoch or phase boundary."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
    return tensors


def optimizer_tensors(opt) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors = {f"optim.{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    return tensors, {"param_groups": sd["param_groups"]}


# ---- resume -----------------------------------------------------------------------------------------
state = {"phase": 0, "epoch": 0, "best": -1.0, "best_epoch": None, "stale": 0}
state_prefix = out / "train_state"
resume_tensors = None
if args.resume and Path(f"{state_prefix}.json").exists():
    state = json.loads(Path(f"{state_prefix}.json").read_text())
    resume_tensors = load_file(f"{state_prefix}.safetensors")
    model.load_state_dict({k[6:]: v for k, v in resume_tensors.items() if k.startswith("model.")})
    ema_state = {k[4:]: v for k, v in resume_tensors.items() if k.startswith("ema.")}
    if ema is not None:  # a state saved without the EMA restarts it from the resumed weights
        ema.module.load_state_dict(ema_state or model.state_dict())
    where = phases[state["phase"]][0] if state["phase"] < len(phases) else "end (every phase is done)"
    log(f"resumed at phase {where}, epoch {state['epoch']}, best {state['best']:.4f}")

metrics_path = out / "metrics.csv"
if main_process and not (args.resume and metrics_path.exists()):
    metrics_path.write_text("phase,epoch,lr,train_loss,train_acc,val_balanced_accuracy,val_macro_auc,val_accuracy,seconds\n")

# ---- the phases ---------------------------------------------------------------------------------------
from tqdm import tqdm  # noqa: E402

generator = torch.Generator().manual_seed(args.seed + 1000 * state["phase"] + state["epoch"])
for phase_index in range(state["phase"], len(phases)):
    name, trainable, epochs, lr = phases[phase_index]
    for n, param in model.named_parameters():
        param.requires_grad_(bool(trainable(n)))
    params = [param for param in model.parameters() if param.requires_grad]
    decay = [q for q in params if q.ndim > 1]
    no_decay = [q for q in params if q.ndim <= 1]  # norms and biases: no weight decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    if resume_tensors is not None and state["epoch"] > 0:
        groups = json.loads(Path(f"{state_prefix}.json").read_text()).get("optimizer", {})
        if groups:
            sd = opt.state_dict()
            sd["param_groups"] = groups["param_groups"]
            for key, v in resume_tensors.items():
                if key.startswith("optim."):
                    _, i, k = key.split(".", 2)
                    sd["state"].setdefault(int(i), {})[k] = v
            opt.load_state_dict(sd)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None) \
        if distributed else model
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    steps_per_epoch = max(1, len(train_y) // (args.batch_size * world))
    total_steps, warmup = epochs * steps_per_epoch, steps_per_epoch if not fine_tuning or name == "head" else 0

    for epoch in range(state["epoch"], epochs):
        t0 = time.time()
        model.train()
        # One epoch = len(train) draws with the sampling weights; every rank draws the same list
        # (same seed) and takes its own slice.
        order = torch.multinomial(sample_weight, steps_per_epoch * args.batch_size * world, True, generator=generator)
        order = order.view(steps_per_epoch, world, args.batch_size)[:, rank]
        total_loss = total_correct = seen = 0
        bar = tqdm(range(steps_per_epoch), desc=f"{name} {epoch + 1}/{epochs}", disable=not main_process,
                   mininterval=5, dynamic_ncols=True)
        for step in bar:
            global_step = epoch * steps_per_epoch + step
            # Linear warm-up, then cosine decay to zero over the phase.
            scale = (global_step + 1) / warmup if global_step < warmup else \
                0.5 * (1 + math.cos(math.pi * (global_step - warmup) / max(1, total_steps - warmup)))
            for group in opt.param_groups:
                group["lr"] = lr * scale
            idx = order[step]
            x = augment.random_affine(train_images[idx], img_size, generator)
            x = augment.normalize(augment.color_jitter(x, generator), data_config.mean, data_config.std)
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = train_y[idx].to(device)
            with torch.autocast("cuda", enabled=cuda):
                logits = net(x)
                loss = F.cross_entropy(logits.float() + log_prior, y, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update(model)
            total_loss += loss.item() * len(y)
            total_correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{total_correct / seen:.3f}")

        # Validation of the weights we would ship (the EMA when enabled), on every rank alike.
        judged = ema.module if ema is not None else model
        val_logits = evaluate_views(judged, val_views)
        val_probs = softmax(val_logits)
        m = classification_metrics(val_y, val_probs, labels, n_boot=0)
        improved = m["balanced_accuracy"] > state["best"]
        state.update(epoch=epoch + 1, phase=phase_index)
        if improved:
            state.update(best=m["balanced_accuracy"], best_epoch=f"{name}:{epoch + 1}", stale=0)
        else:
            state["stale"] += 1
        seconds = time.time() - t0
        log(f"{name} epoch {epoch + 1}/{epochs}: loss {total_loss / seen:.4f} train acc {total_correct / seen:.3f} | "
            f"val balanced acc {m['balanced_accuracy']:.4f} macro AUC {m['macro_auc']:.4f}"
            f"{' (best)' if improved else ''} | {seconds:.0f}s")
        if main_process:
            with open(metrics_path, "a", newline="") as f:
                csv.writer(f).writerow([name, epoch + 1, f"{lr * scale:.3g}", f"{total_loss / seen:.4f}",
                                        f"{total_correct / seen:.4f}", f"{m['balanced_accuracy']:.4f}",
                                        f"{m['macro_auc']:.4f}", f"{m['accuracy']:.4f}", f"{seconds:.1f}"])
            if improved:
                export_checkpoint(judged, out, labels, half=args.half,
                                  extra_config={"training": {"arch": arch, "pretrained": args.pretrained,
                                                             "init": args.init, "init_lineage": lineage,
                                                             "best_epoch": state["best_epoch"],
                                                             "val_balanced_accuracy": state["best"]}})
            tensors, groups = optimizer_tensors(opt)
            save_state(state_prefix, {**state, "optimizer": groups}, {**tensors, **weight_tensors()})
        if state["stale"] >= args.patience:
            log(f"early stop of phase {name}: {args.patience} epochs without a better val balanced accuracy")
            break
    state.update(phase=phase_index + 1, epoch=0, stale=0)
    resume_tensors = None
    if main_process:
        save_state(state_prefix, state, weight_tensors())

# ---- calibration and evaluation of the exported best checkpoint, through the app's predictor ---------
if main_process:
    from .finalize import finalize
    finalize(out, parts, vars(args), device=str(device), n_boot=args.bootstrap, log=log)
if distributed:
    dist.destroy_process_group()
