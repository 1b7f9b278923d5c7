"""Test support shared by the suites of every app: service discovery, S3 and ComfyUI stand-ins."""
