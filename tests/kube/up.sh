#!/usr/bin/env bash
# Start the test control plane (3 fake nodes: lab-server, lab-cpu-1, lab-gpu-1) in the background
# and print its kubeconfig. `make kube-down` (down.sh) stops it. Build it first: `make kube-build`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
STATE="${HERE}/.build/up"
PYTHON="${PYTHON:-}"
if [[ -z "${PYTHON}" ]]; then
	# controlplane.py needs `cryptography`, which the project venv has.
	if [[ -x "${ROOT}/.venv/bin/python" ]]; then PYTHON="${ROOT}/.venv/bin/python"; else PYTHON=python3; fi
fi

if [[ -f "${STATE}/pid" ]] && kill -0 "$(cat "${STATE}/pid")" 2>/dev/null; then
	echo "kube-up: already running (pid $(cat "${STATE}/pid")); KUBECONFIG=${STATE}/kubeconfig"
	exit 0
fi
rm -rf "${STATE}"
mkdir -p "${STATE}"

# setsid: the launcher leads its own process group, so down.sh can stop it and everything under it.
setsid "${PYTHON}" "${HERE}/controlplane.py" serve --state-dir "${STATE}" "$@" >"${STATE}/serve.log" 2>&1 &
echo $! >"${STATE}/pid"

for _ in $(seq 1 240); do # bounded: 120 s
	if [[ -f "${STATE}/ready" ]]; then
		echo "kube-up: control plane ready: $(cat "${STATE}/ready")"
		echo "export KUBECONFIG=${STATE}/kubeconfig PATH=${HERE}/.build/bin:\$PATH"
		exit 0
	fi
	if ! kill -0 "$(cat "${STATE}/pid")" 2>/dev/null; then
		echo "kube-up: the control plane exited; its log:" >&2
		cat "${STATE}/serve.log" >&2
		exit 1
	fi
	sleep 0.5
done
echo "kube-up: not ready after 120 s; stopping it. Log: ${STATE}/serve.log" >&2
"${HERE}/down.sh"
exit 1
