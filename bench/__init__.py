"""The speed benchmark: how long an explained prediction takes, and what it costs beside a forward pass.

    python -m bench [--model SPEC] [--backends torch,onnx] [--out bench-results/NAME.json] [--quick]

Everything runs on this machine, batch 1, after warm-up, and reports medians over repeated runs:

- in this process, interleaving the backends so they share whatever else the machine is doing:
  the plain forward pass (a preprocessed input), predict (decode + preprocess + forward + softmax),
  analyze (the app's `explain.analyze`: probabilities, Grad-CAM maps for every class, and the top
  class's overlay at the upload's size), the same work done with the `grad-cam` package on the same
  model and layer (top class only, as its users usually call it, and all classes), and the PDF report;
- in a separate server process per backend (`python app.py`, loopback only): cold start (process
  start to the first answered /inference request), the first and the warm /inference round trip,
  and the server's peak resident memory.

`measure` (in-process), `serve` (server process) and `summary` (ratios, targets, table) are the parts.
"""
