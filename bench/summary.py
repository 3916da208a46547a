"""Ratios, the issue's targets, and the printed table, from a benchmark result."""
from __future__ import annotations

import statistics

# (name, what, comparison, bound): the speed targets this app holds itself to on a 2-vCPU CPU machine.
TARGETS = (
    ("analyze_over_forward_paired", "analyze / plain forward, same backend, per round", "<=", 1.10),
    ("pytorch_grad_cam_over_analyze", "pytorch-grad-cam (top class) / analyze, torch", ">=", 2.5),
    ("torch_over_onnx_analyze", "torch analyze / ONNX analyze", ">=", 1.25),
    ("report_ms", "PDF report (ms)", "<=", 150.0),
    ("cold_start_s", "cold start to first answer (s)", "<=", 20.0),
    ("peak_rss_mb", "peak RSS of the server (MB)", "<=", 1500.0),
)


def _median(section: dict | None, step: str, key: str = "median_ms") -> float | None:
    value = (section or {}).get(step)
    return value.get(key) if isinstance(value, dict) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _paired(section: dict | None, a: str, b: str) -> float | None:
    """Median over rounds of a's time / b's time in the same round (wall time).

    The steps run round-robin, so a round's two timings share the machine's state (clock, load from
    other processes, caches); a ratio of two medians instead divides samples taken at different
    moments, and on a shared 2-core machine it moves by several percent between identical runs.
    """
    sa, sb = (((section or {}).get(step) or {}).get("samples_ms") for step in (a, b))
    if not sa or not sb:
        return None
    return round(statistics.median(x / y for x, y in zip(sa, sb)), 3)


def ratios(result: dict, key: str = "median_ms") -> dict:
    """The issue's ratios from wall-time medians (key="median_ms") or CPU-time medians ("cpu_median_ms");
    the per-round (paired) ratio is computed from the wall-time samples only."""
    backends = result["backends"]
    torch, onnx = backends.get("torch"), backends.get("onnx")
    cam = result["pytorch_grad_cam"]

    def m(section, step):
        return _median(section, step, key)

    return {
        "analyze_over_forward": {b: _ratio(m(s, "analyze"), m(s, "forward")) for b, s in backends.items()},
        "analyze_over_forward_paired": {b: _paired(s, "analyze", "forward") if key == "median_ms" else None
                                        for b, s in backends.items()},
        "analyze_over_predict": {b: _ratio(m(s, "analyze"), m(s, "predict")) for b, s in backends.items()},
        "pytorch_grad_cam_over_analyze": _ratio(m(cam, "top_class"), m(torch, "analyze")),
        "pytorch_grad_cam_all_classes_over_analyze": _ratio(m(cam, "all_classes"), m(torch, "analyze")),
        "pytorch_grad_cam_over_onnx_analyze": _ratio(m(cam, "top_class"), m(onnx, "analyze")),
        "torch_over_onnx_forward": _ratio(m(torch, "forward"), m(onnx, "forward")),
        "torch_over_onnx_analyze": _ratio(m(torch, "analyze"), m(onnx, "analyze")),
    }


def targets(result: dict) -> list[dict]:
    """Every target with the measured value(s) and whether it is met; one row per backend where it applies."""
    r, rows = result["ratios"], []

    def add(name, what, op, bound, value, backend=None):
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        rows.append({"name": name, "backend": backend, "what": what, "target": f"{op} {bound:g}",
                     "value": value, "met": met})

    for name, what, op, bound in TARGETS:
        if name == "analyze_over_forward_paired":
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
             f"{result['machine']['load_average_start']}, end {result['machine']['load_average_end']}",
             "wall: elapsed time; cpu: CPU time of the process, all threads (the work itself, spin-waiting "
             "included; it barely grows when other processes load the machine)", ""]
    header = f"{'step':<36}" + "".join(f"{b + ' wall':>12}{b + ' cpu':>12}" for b in names)
    lines += [header, "-" * len(header)]
    for step, label in (("forward", "plain forward (ms)"), ("predict", "predict: decode+preprocess+fwd (ms)"),
                        ("analyze", "analyze: probs+all CAMs+overlay (ms)")):
        lines.append(f"{label:<36}" + "".join(f"{_fmt(_median(backends[b], step)):>12}"
                                              f"{_fmt(_median(backends[b], step, 'cpu_median_ms')):>12}" for b in names))
    servers = {b: backends[b].get("server") or {} for b in names}
    for label, get in (("REST /inference round trip (ms)", lambda s: (s.get("rest_inference_ms") or {}).get("median_ms")),
                       ("first request after start (ms)", lambda s: s.get("first_request_ms")),
                       ("second request (ms)", lambda s: s.get("second_request_ms")),
                       ("cold start to first answer (s)", lambda s: s.get("cold_start_s")),
                       ("server peak RSS (MB)", lambda s: s.get("peak_rss_mb"))):
        lines.append(f"{label:<36}" + "".join(f"{_fmt(get(servers[b])):>12}{'':>12}" for b in names))
    cam = result["pytorch_grad_cam"]
    lines.append("")
    for label, section in (("pytorch-grad-cam, top class (torch)", cam["top_class"]),
                           ("pytorch-grad-cam, all classes (torch)", cam["all_classes"]),
                           ("PDF report", result["report"])):
        lines.append(f"{label:<40}{_fmt(section['median_ms']):>12} ms wall{_fmt(section.get('cpu_median_ms')):>12} ms cpu")
    lines += [f"{'  max |app CAM - package CAM|':<40}{cam['max_abs_diff_vs_app']:>12.1e}", "",
              f"{'ratio':<46}{'wall':>10}{'cpu':>10}"]
    r, rc = result["ratios"], result.get("ratios_cpu") or {}
    for name, value in r.items():
        if isinstance(value, dict):
            for b, v in value.items():
                lines.append(f"{name + ' [' + b + ']':<46}{_fmt(v):>10}{_fmt((rc.get(name) or {}).get(b)):>10}")
        else:
            lines.append(f"{name:<46}{_fmt(value):>10}{_fmt(rc.get(name)):>10}")
    lines += ["", "targets (wall time):"]
    for row in result["targets"]:
        mark = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        who = f" [{row['backend']}]" if row["backend"] else ""
        lines.append(f"  {row['what']}{who}: {_fmt(row['value'])} (target {row['target']}): {mark}")
    if result.get("errors"):
        lines += ["", "errors:"] + [f"  {k}: {v}" for k, v in result["errors"].items()]
    return "\n".join(lines)
