#!/usr/bin/env bash
# Stop the control plane that up.sh started: SIGTERM to its process group (the launcher stops
# etcd, the API server, controllers and kwok), SIGKILL after 30 s if anything is left.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${HERE}/.build/up"
if [[ ! -f "${STATE}/pid" ]]; then
	echo "kube-down: nothing to stop"
	exit 0
fi
PID="$(cat "${STATE}/pid")"
if kill -0 "${PID}" 2>/dev/null; then
	kill -TERM -- "-${PID}" 2>/dev/null || true
	for _ in $(seq 1 60); do
		kill -0 "${PID}" 2>/dev/null || break
		sleep 0.5
	done
	# The components run in their own process groups and die with the launcher (PR_SET_PDEATHSIG).
	kill -KILL -- "-${PID}" 2>/dev/null || true
fi
rm -rf "${STATE}"
echo "kube-down: stopped"
