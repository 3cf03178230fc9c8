"""ailab's YOLO inference server (AGPL-3.0-only, as it links ultralytics)."""

import os

# ultralytics reads these when it is first imported: never download weights, fonts or assets, never
# pip-install at run time. Set here so every entry point (CLI, tests, uvicorn factory) gets them.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")

__version__ = "0.1.0"
