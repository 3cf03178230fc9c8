"""Bootstrap pip the way ansible-test's get-pip script would, without its download host.

ansible-test fetches get-pip.py from a host the lab's test machines cannot reach; this stand-in
installs pip from the interpreter's bundled wheel (ensurepip) and then the requested packages
from the configured package index.
"""

import subprocess
import sys

IGNORED_FLAGS = {"--no-setuptools", "--no-wheel"}

subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True)
requested = [arg for arg in sys.argv[1:] if arg not in IGNORED_FLAGS]
if any(not arg.startswith("-") for arg in requested):
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *requested], check=True
    )
