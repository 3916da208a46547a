"""Serving: the Gradio UI's event handlers (`serving.ui`) and the REST API (`serving.rest`)."""
