"""``ailab-serve``: the command line. ``serve`` runs the server; ``train`` will follow (issue 8, part 2).

Every setting is a flag (``--model-dir``) and an environment variable (``AILAB_SERVE_MODEL_DIR``);
flags win. The flags are generated from the settings model, so the two never drift apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .settings import Settings


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=field.description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ailab-serve", description="ailab YOLO server (AGPL-3.0-only)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve models over HTTP (OIP v2 + /v1 API + web page)")
    _add_setting_flags(serve)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: value for name in Settings.model_fields if (value := getattr(args, name, None)) is not None
    }
    return Settings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"ailab-serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    return 2


def serve(settings: Settings) -> int:
    import uvicorn  # noqa: PLC0415  (keeps `ailab-serve --help` fast)

    from .app import create_app  # noqa: PLC0415  (imports torch and ultralytics)
    from .logs import setup_logging  # noqa: PLC0415

    setup_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # Our own admission (JSON errors with Retry-After) decides what is accepted; uvicorn's bound is
        # a last resort against connection floods, set well above it so probes still get through.
        limit_concurrency=settings.max_inflight_requests * 4 + 32,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
