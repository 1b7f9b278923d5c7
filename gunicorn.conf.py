"""gunicorn's settings, read from the working directory (the image's /app): its lines are logged like the app's.

Without this, gunicorn's own process (the arbiter: workers booting, exiting, timing out) writes lines
in its own plain format beside the app's JSON. ``logconfig_dict`` gives it the app's logging setup
(``rekindle.logs``: JSON or console, scrubbed), read from the same variables, before Django is
loaded; each worker then applies the same again from the settings. Flags on the command line
(``--workers``, ``--bind``, ...) still win over anything set here.
"""

import os

from rekindle.logs import default_format, logging_config

_debug = os.environ.get("DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
logconfig_dict = logging_config(
    fmt=os.environ.get("LOG_FORMAT", "").strip().lower() or default_format(_debug),
    level=os.environ.get("LOG_LEVEL", "").strip() or "INFO",
)
