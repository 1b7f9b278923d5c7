"""Command line: start one stand-in ComfyUI server and serve until killed."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
from pathlib import Path

from aiohttp import web

from rekindle.testing.comfyui_standin.nodes import DEFAULT_MODELS
from rekindle.testing.comfyui_standin.server import Standin, StandinConfig, make_app


async def _watch_parent(app: web.Application, parent_pid: int) -> None:
    """Exit with the test run that started us, even when it is killed and cannot stop us itself."""

    async def watch() -> None:
        while os.getppid() == parent_pid:
            await asyncio.sleep(0.5)
        os._exit(0)

    app["parent_watch"] = asyncio.ensure_future(watch())


def main() -> None:
    parser = argparse.ArgumentParser(description="A ComfyUI 0.3.64 stand-in for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--exec-seconds", type=float, default=0.2, help="seconds each sampler node takes")
    parser.add_argument("--switch-seconds", type=float, default=0.0, help="model load when the workflow changes")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="installed model files, comma-separated")
    parser.add_argument("--faults", default="{}", help="faults to start with, as JSON")
    parser.add_argument("--base-dir", default="", help="input/output/temp folders (default: a temporary folder)")
    parser.add_argument(
        "--record", default="", help="append each prompt's queued/started/ended events here (JSON lines)"
    )
    parser.add_argument(
        "--no-files-extension", action="store_true", help="answer 404 on /rekindle/... as a node without it"
    )
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process (the test run) is gone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    with tempfile.TemporaryDirectory(prefix="comfyui-standin-") as scratch:
        config = StandinConfig(
            sampler_seconds=args.exec_seconds,
            switch_seconds=args.switch_seconds,
            models=[name.strip() for name in args.models.split(",") if name.strip()],
            base_dir=Path(args.base_dir or scratch),
            record_path=Path(args.record) if args.record else None,
            files_extension=not args.no_files_extension,
        )

        async def build() -> web.Application:
            standin = Standin(config)
            standin.faults.update(json.loads(args.faults))
            app = make_app(standin)
            if args.parent_pid:
                app.on_startup.append(lambda app: _watch_parent(app, args.parent_pid))
            return app

        web.run_app(build(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
