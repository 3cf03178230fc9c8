#!/usr/bin/env bash
# ansible-test needs the collection at .../ansible_collections/<namespace>/<name>/: run it on a copy
# of the collection's content (what `ansible-galaxy collection build` ships, not serving/ or the
# test control plane) so the checkout can live anywhere.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
python_version=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# ansible-test bootstraps pip in its own venvs with a script it downloads from a host that is
# unreachable here; a stand-in that uses ensurepip + PyPI goes where it looks for that script.
pip_version=$(grep -oP "pip='\K[0-9.]+" \
  "$("$venv/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')"/_internal/python_requirements.py)
mkdir -p ~/.ansible/test/cache
cp "$repo/scripts/get_pip_offline.py" ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"

work=$(mktemp -d /tmp/ailab-sanity.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/ailab/platform
mkdir -p "$dest"
cd "$repo"
git ls-files --cached --others --exclude-standard -- \
  galaxy.yml meta plugins roles playbooks changelogs README.md CHANGELOG.md LICENSE tests/unit \
  | while read -r f; do [[ -e "$f" ]] && echo "$f"; done \
  | tar -c -T - | tar -C "$dest" -x
cd "$dest"
git init -q && git add -A && git -c user.email=ci@ailab -c user.name=ci commit -qm sanity
"$venv/bin/ansible-test" sanity --python "$python_version" --color no "$@"
