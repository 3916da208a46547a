"""Ratios, the issue's targets, and the printed table, from a benchmark result."""
from __future__ import annotations

# (name, what, comparison, bound): the speed targets this app holds itself to on a 2-vCPU CPU machine.
TARGETS = (
    ("analyze_over_forward", "analyze / plain forward, same backend", "<=", 1.10),
    ("pytorch_grad_cam_over_analyze", "pytorch-grad-cam (top class) / analyze, torch", ">=", 2.5),
    ("torch_over_onnx_analyze", "torch analyze / ONNX analyze", ">=", 1.25),
    ("report_ms", "PDF report (ms)", "<=", 150.0),
    ("cold_start_s", "cold start to first answer (s)", "<=", 20.0),
    ("peak_rss_mb", "peak RSS of the server (MB)", "<=", 1500.0),
)


def _median(section: dict | None, step: str) -> float | None:
    value = (section or {}).get(step)
    return value["median_ms"] if isinstance(value, dict) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios(result: dict) -> dict:
    backends = result["backends"]
    torch, onnx = backends.get("torch"), backends.get("onnx")
    cam = result["pytorch_grad_cam"]
    return {
        "analyze_over_forward": {b: _ratio(_median(s, "analyze"), _median(s, "forward")) for b, s in backends.items()},
        "analyze_over_predict": {b: _ratio(_median(s, "analyze"), _median(s, "predict")) for b, s in backends.items()},
        "pytorch_grad_cam_over_analyze": _ratio(_median(cam, "top_class"), _median(torch, "analyze")),
        "pytorch_grad_cam_all_classes_over_analyze": _ratio(_median(cam, "all_classes"), _median(torch, "analyze")),
        "pytorch_grad_cam_over_onnx_analyze": _ratio(_median(cam, "top_class"), _median(onnx, "analyze")),
        "torch_over_onnx_forward": _ratio(_median(torch, "forward"), _median(onnx, "forward")),
        "torch_over_onnx_analyze": _ratio(_median(torch, "analyze"), _median(onnx, "analyze")),
    }


def targets(result: dict) -> list[dict]:
    """Every target with the measured value(s) and whether it is met; one row per backend where it applies."""
    r, rows = result["ratios"], []

    def add(name, what, op, bound, value, backend=None):
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        rows.append({"name": name, "backend": backend, "what": what, "target": f"{op} {bound:g}",
                     "value": value, "met": met})

    for name, what, op, bound in TARGETS:
        if name == "analyze_over_forward":
            for backend, value in r[name].items():
                add(name, what, op, bound, value, backend)
        elif name in ("cold_start_s", "peak_rss_mb"):
            for backend, section in result["backends"].items():
                add(name, what, op, bound, (section.get("server") or {}).get(name), backend)
        elif name == "report_ms":
            add(name, what, op, bound, result["report"]["median_ms"])
        else:
            add(name, what, op, bound, r[name])
    return rows


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}{unit}" if abs(value) >= 10 else f"{value:.2f}{unit}"


def table(result: dict) -> str:
    """The human-readable summary `python -m bench` prints."""
    backends = result["backends"]
    names = list(backends)
    m = result["model"]
    lines = [f"Model {m['id']} ({m['architecture']}, input {'x'.join(map(str, m['input_size']))}); image "
             f"{result['image']['width']}x{result['image']['height']}; batch 1; medians of {result['settings']['runs']} "
             f"runs after {result['settings']['warmup']} warm-up",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; load average at start "
             f"{result['machine']['load_average_start']}, end {result['machine']['load_average_end']}", ""]
    header = f"{'step':<34}" + "".join(f"{b + ' ms':>14}" for b in names)
    lines += [header, "-" * len(header)]
    for step, label in (("forward", "plain forward"), ("predict", "predict (decode+preprocess+fwd)"),
                        ("analyze", "analyze (probs+all CAMs+overlay)")):
        lines.append(f"{label:<34}" + "".join(f"{_fmt(_median(backends[b], step)):>14}" for b in names))
    server = {b: backends[b].get("server") or {} for b in names}
    lines.append(f"{'REST /inference round trip':<34}" +
                 "".join(f"{_fmt((server[b].get('rest_inference_ms') or {}).get('median_ms')):>14}" for b in names))
    lines.append(f"{'first request after start':<34}" + "".join(f"{_fmt(server[b].get('first_request_ms')):>14}" for b in names))
    lines.append(f"{'cold start to first answer (s)':<34}" + "".join(f"{_fmt(server[b].get('cold_start_s')):>14}" for b in names))
    lines.append(f"{'server peak RSS (MB)':<34}" + "".join(f"{_fmt(server[b].get('peak_rss_mb')):>14}" for b in names))
    cam = result["pytorch_grad_cam"]
    lines += ["", f"{'pytorch-grad-cam, top class (torch)':<40}{_fmt(_median(cam, 'top_class')):>12} ms",
              f"{'pytorch-grad-cam, all classes (torch)':<40}{_fmt(_median(cam, 'all_classes')):>12} ms",
              f"{'  max |app CAM - package CAM|':<40}{cam['max_abs_diff_vs_app']:>12.1e}",
              f"{'PDF report':<40}{_fmt(result['report']['median_ms']):>12} ms", ""]
    r = result["ratios"]
    for name in ("analyze_over_forward", "analyze_over_predict"):
        lines.append(f"{name:<40}" + "  ".join(f"{b} {_fmt(v)}" for b, v in r[name].items()))
    for name in ("pytorch_grad_cam_over_analyze", "pytorch_grad_cam_all_classes_over_analyze",
                 "pytorch_grad_cam_over_onnx_analyze", "torch_over_onnx_forward", "torch_over_onnx_analyze"):
        lines.append(f"{name:<40}{_fmt(r[name])}")
    lines += ["", "targets:"]
    for row in result["targets"]:
        mark = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        who = f" [{row['backend']}]" if row["backend"] else ""
        lines.append(f"  {row['what']}{who}: {_fmt(row['value'])} (target {row['target']}): {mark}")
    if result.get("errors"):
        lines += ["", "errors:"] + [f"  {k}: {v}" for k, v in result["errors"].items()]
    return "\n".join(lines)
