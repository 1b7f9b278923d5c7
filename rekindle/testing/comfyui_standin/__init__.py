"""A stand-in for a ComfyUI 0.3.64 server, for tests and benchmarks: same routes, messages and error bodies.

Run it as ``python -m rekindle.testing.comfyui_standin --port 8188 [--exec-seconds S]
[--switch-seconds S] [--models a.safetensors,b.safetensors] [--faults '{"oom": 1}']
[--record prompts.jsonl]``.
It runs the core image and video nodes for real (Pillow, PyAV) and gives model-based
nodes a set time (samplers report their steps), passing the input image through so
production graphs yield real outputs. Tests switch faults on with
``POST /_standin/faults`` (counted execution faults, and ``http`` faults that make a route
answer an error status), read counters with ``GET /_standin/state`` and each prompt's
queued/started/ended times with ``GET /_standin/prompts``; see
``rekindle/testing/comfyui_fixtures.py`` for the pytest fixtures that start these servers.
"""
