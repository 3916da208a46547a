"""Write a model as a timm Hugging Face Hub checkpoint: config.json + model.safetensors."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch


def export_checkpoint(model: torch.nn.Module, out_dir: Path, labels: list[str], half: bool = False,
                      extra_config: dict | None = None) -> None:
    """Save weights (fp16 if `half`) and config with label_names; loadable by timm and the app."""
    from timm.models import save_for_hf

    model = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    if half:
        model = model.half()  # halves the file; the loader upcasts to float32
    model_config = {"label_names": list(labels), **(extra_config or {})}
    # Our preprocessing replaces the source architecture's test-time recommendations.
    cfg = model.pretrained_cfg
    data_config = {k: cfg[k] for k in ("input_size", "crop_pct", "interpolation", "mean", "std", "crop_mode") if k in cfg}
    save_for_hf(model, str(out_dir), model_config=model_config, safe_serialization=True, data_config=data_config)
    drop_source_provenance(out_dir)


# pretrained_cfg keys describing the architecture's published ImageNet weights (tag, licence, paper, Hub
# id). Our weights are not those, so the fields would misstate where they came from.
SOURCE_PROVENANCE_KEYS = ("tag", "license", "origin_url", "paper_ids", "paper_name", "hf_hub_id",
                          "hf_hub_filename", "url", "file", "notes", "source")


def drop_source_provenance(out_dir: Path) -> dict:
    """Remove the source weights' provenance from an exported config.json's pretrained_cfg."""
    path = Path(out_dir) / "config.json"
    config = json.loads(path.read_text())
    for key in SOURCE_PROVENANCE_KEYS:
        config.get("pretrained_cfg", {}).pop(key, None)
    path.write_text(json.dumps(config, indent=2))
    return config


def update_config(out_dir: Path, **values) -> dict:
    """Add or replace top-level keys of an exported config.json (e.g. the fitted temperature)."""
    path = Path(out_dir) / "config.json"
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config, indent=2))
    return config
