"""The web app: the Gradio UI and Gradio API, mounted with the REST API on one FastAPI server.

    python app.py [--host H] [--port P] [--model DIR_OR_HUB_ID] [--backend torch|onnx|auto]
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no usage reports
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from model import ModelLoadError, get_classifier  # noqa: E402
from report import BODY_SITES, SEXES  # noqa: E402
from serving import ui  # noqa: E402
from serving.rest import Limits, create_rest_app  # noqa: E402

SHUTDOWN_GRACE_S = 5  # requests in flight get this long to finish when the server stops
UPLOAD_TTL_S = 900  # uploads, overlays and reports leave Gradio's cache this long after they were made
NOTICE = ("**Research and education software. Not a medical device and not a diagnosis.** The result is a "
          "statistical estimate from one photograph and can be wrong. Anyone worried about a skin lesion "
          "should see a clinician, whatever this shows.")
PRIVACY = (f"Images and case details are used only to answer your request: never logged or sent anywhere, "
           f"and temporary files are deleted within {UPLOAD_TTL_S // 60 + 1} minutes.")
CSS = """
.notice { border-left: 4px solid #d97706; background: rgba(217,119,6,.10); padding: 8px 12px; border-radius: 6px; }
.verdict { border-left: 6px solid #6b7280; padding: 10px 14px; border-radius: 8px; background: rgba(107,114,128,.08); }
.verdict p { margin: 6px 0; }
.verdict-head { font-size: 1.35em; font-weight: 600; }
.verdict-code, .verdict-p { font-weight: 400; opacity: .75; }
.severity-badge { display: inline-block; padding: 1px 10px; border-radius: 999px; color: #fff; background: #6b7280;
                  font-weight: 600; font-size: .85em; margin-top: 4px; }
.severity-high { border-color: #dc2626; background: rgba(220,38,38,.08); }
.severity-high .severity-badge { background: #dc2626; }
.severity-medium { border-color: #d97706; background: rgba(217,119,6,.08); }
.severity-medium .severity-badge { background: #b45309; }
.severity-low { border-color: #16a34a; background: rgba(22,163,74,.08); }
.severity-low .severity-badge { background: #15803d; }
.verdict .caveat { font-weight: 600; }
.verdict .not-diagnosis, .fineprint { font-size: .85em; opacity: .8; }
"""


def build_ui(classifier) -> gr.Blocks:
    """The one-page UI; its Analyse and report events are also the Gradio API (/analyze, /report)."""
    info = classifier.info
    with gr.Blocks(title="Explainable skin-lesion AI", delete_cache=(60, UPLOAD_TTL_S)) as demo:
        gr.Markdown("# Explainable skin-lesion AI\nClassifies a dermoscopic photo into the 7 HAM10000 "
                    "classes and shows where the model looked (Grad-CAM), for any class.")
        gr.Markdown(NOTICE, elem_classes="notice")
        explanation = gr.State(time_to_live=UPLOAD_TTL_S)
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row(equal_height=True):
                    image = ui.upload_input(label="Dermoscopic image", height=340, elem_id="upload",
                                            sources=["upload", "clipboard"])
                    overlay = gr.Image(label="Grad-CAM heatmap", interactive=False, format="png", height=340,
                                       buttons=["download", "fullscreen"], elem_id="overlay")
                with gr.Row(equal_height=True):
                    analyse = gr.Button("Analyse", variant="primary", scale=1)
                    heatmap_class = gr.Dropdown(ui.heatmap_choices(classifier.labels), value=ui.TOP_CLASS,
                                                label="Heatmap for", scale=2, elem_id="heatmap-class")
                    opacity = gr.Slider(0.0, 1.0, value=ui.DEFAULT_OPACITY, step=0.05,
                                        label="Heatmap opacity", scale=2)
                truth = gr.Textbox(label="True class (HAM10000)", visible=False)
                examples = ui.example_images()
                gr.Examples([[path, ui.class_key(dx)] for dx, path in examples], inputs=[image, truth],
                            label="Examples: one test-set image per class (click, then Analyse)",
                            examples_per_page=7)
                gr.Markdown("Example images: HAM10000 (Tschandl et al., Sci Data 2018), CC BY-NC 4.0; "
                            "sources in examples/README.md.", elem_classes="fineprint")
            with gr.Column(scale=2):
                summary = gr.HTML(elem_id="summary")
                probabilities = gr.Label(num_top_classes=len(classifier.labels),
                                         label="Probability of each class", elem_id="probabilities")
        with gr.Accordion("Case details (optional) and PDF report", open=False):
            with gr.Row():
                reference = gr.Textbox("", label="Case reference")
                age = gr.Number(label="Age (years)", minimum=0, maximum=120, precision=0)
                sex = gr.Dropdown(_optional(SEXES), value="", label="Sex")
                body_site = gr.Dropdown(_optional(BODY_SITES), value="", label="Body site")
            with gr.Row():
                clinician = gr.Textbox("", label="Referring clinician")
                page_size = gr.Radio(list(ui.PAGE_SIZES), value="A4", label="Page size")
            notes = gr.Textbox("", label="Clinical notes", lines=3)
            with gr.Row(equal_height=True):
                make_report = gr.Button("Create PDF report", variant="primary", scale=1)
                report = gr.File(label="PDF report", interactive=False, scale=2, elem_id="report-file")
        gr.Markdown(f"{PRIVACY}  \nModel: `{info['id']}` @ `{info['revision'][:12]}` ({info['architecture']}, "
                    f"{info['backend']}), weights SHA-256 `{info['sha256'][:12]}…`", elem_classes="fineprint")

        analyse.click(functools.partial(ui.analyze_image, classifier), [image, heatmap_class, opacity],
                      [probabilities, overlay, explanation], api_name="analyze").success(
            ui.summary_html, explanation, summary, api_visibility="private", queue=False)
        redraw = dict(fn=ui.redraw_overlay, inputs=[image, explanation, heatmap_class, opacity], outputs=overlay,
                      api_visibility="private", show_progress="hidden")
        heatmap_class.change(**redraw)
        opacity.release(**redraw)
        # A new image makes the old results wrong: clear them until it is analysed.
        image.change(lambda: (None, None, "", None, None), None,
                     [probabilities, overlay, summary, explanation, report], api_visibility="private",
                     queue=False)
        make_report.click(functools.partial(ui.make_report, classifier),
                          [image, reference, age, sex, body_site, notes, clinician, page_size], report,
                          api_name="report")
    return demo


def _optional(values) -> list[tuple[str, str]]:
    return [("not given", "")] + [(v, v) for v in values]


def create_app(spec: str | None = None, backend: str | None = None, limits: Limits | None = None):
    """The FastAPI app `python app.py` serves: REST routes, with the Gradio UI and API mounted at "/".

    limits default to the SKIN_MAX_* environment (see serving.rest.Limits).
    """
    classifier = get_classifier(spec, backend)
    limits = limits or Limits.from_env()
    demo = build_ui(classifier).queue(default_concurrency_limit=limits.max_concurrency,
                                      max_size=limits.max_queue)
    return gr.mount_gradio_app(create_rest_app(classifier, limits), demo, path="/", css=CSS,
                               theme=gr.themes.Soft(primary_hue="teal"), footer_links=["api"], ssr_mode=False,
                               max_file_size=limits.max_upload_bytes)


def parse_args(argv=None) -> argparse.Namespace:
    on_space = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description="Explainable skin-lesion AI: web UI, Gradio API and REST API "
                                     "(research and education software, not a medical device).")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or
                        ("0.0.0.0" if on_space else "127.0.0.1"),
                        help="interface to listen on (default: 127.0.0.1; 0.0.0.0 on a Hugging Face Space, "
                             "i.e. when SPACE_ID is set; env GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860),
                        help="port (default: 7860; env PORT or GRADIO_SERVER_PORT)")
    parser.add_argument("--model", metavar="SPEC", default=None,
                        help="checkpoint folder, or Hugging Face Hub id org/name[@revision] "
                             "(default: env SKIN_MODEL, else the bundled default_model/)")
    parser.add_argument("--backend", choices=("torch", "onnx", "auto"), default=None,
                        help="inference backend (default: env SKIN_BACKEND, else torch)")
    return parser.parse_args(argv)


def server(app, host: str, port: int):
    """The uvicorn server for `app`, unstarted.

    No access log: Gradio file URLs carry uploaded file names. On Ctrl+C the open pages' heartbeat streams
    are ended first, and what still runs gets a bounded grace: either would otherwise hold the shutdown,
    and the deletion of Gradio's cache that comes with it, for as long as a page stays open.
    """
    import uvicorn

    class AppServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            for route in app.routes:  # the mounted Gradio app ends its heartbeats when its stop_event is set
                stop_event = getattr(getattr(route, "app", None), "stop_event", None)
                if stop_event is not None:
                    stop_event.set()
            super().handle_exit(sig, frame)

    return AppServer(uvicorn.Config(app, host=host, port=port, access_log=False,
                                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S))


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        limits = Limits.from_env()
    except ValueError as exc:  # a SKIN_MAX_* setting that is not a usable number
        sys.exit(f"error: {exc}")
    try:
        app = create_app(args.model, args.backend, limits)
    except ModelLoadError as exc:
        sys.exit(f"error: {exc}")
    print(f"Serving on http://{args.host}:{args.port} (UI at /, REST docs at /docs)", flush=True)
    try:
        server(app, args.host, args.port).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after its clean shutdown: nothing left to report
        pass


if __name__ == "__main__":
    main()
