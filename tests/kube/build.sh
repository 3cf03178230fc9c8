#!/usr/bin/env bash
# Build the test control plane from Go modules into tests/kube/.build/bin/:
#   kubecp (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl by symlink name),
#   kwok and helm (v3: kubernetes.core 6.2 drives the helm v3 CLI).
# No cluster binary can be downloaded on the project's machines; the Go module proxy is reachable.
# Go's module and build caches (GOMODCACHE, GOCACHE) are reused, and each binary is rebuilt only
# when its stamp (inputs + pinned version + Go version) changed, so a warm run takes a second.
set -euo pipefail

# Pinned versions. Kubernetes and etcd are pinned in go.mod (k8s.io/kubernetes, go.etcd.io/etcd/server/v3).
KWOK_VERSION=v0.8.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The lab's helm is pinned once, in the helm role; the tests use the same release.
HELM_VERSION="$(sed -n 's/^helm_version: *//p' "${HERE}/../../roles/helm/defaults/main.yml")"
[[ "${HELM_VERSION}" == v3.* ]] || { echo "build.sh: no helm v3 version in roles/helm/defaults/main.yml" >&2; exit 1; }
BIN="${HERE}/.build/bin"
mkdir -p "${BIN}"
cd "${HERE}"

command -v go >/dev/null || { echo "build.sh: Go is not installed (go 1.26+ is needed)" >&2; exit 1; }
GO_VERSION="$(go env GOVERSION)"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# fresh NAME KEY: true when .build/bin/NAME exists and was built from KEY.
fresh() { [[ -x "${BIN}/$1" && -f "${BIN}/.$1.stamp" && "$(cat "${BIN}/.$1.stamp")" == "$2" ]]; }
stamp() { printf '%s' "$2" >"${BIN}/.$1.stamp"; }
timed() {
	local name=$1 start=${SECONDS}
	shift
	echo "build.sh: building ${name}..."
	"$@"
	echo "build.sh: built ${name} in $((SECONDS - start)) s"
}

# kubecp: the Kubernetes version comes from go.mod, so /version reports the real release (Helm checks
# charts' kubeVersion against it) instead of the v0.0.0 a plain `go build` would stamp.
K8S_VERSION="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
K8S_MINOR="$(cut -d. -f2 <<<"${K8S_VERSION}")"
K8S_MAJOR="$(cut -d. -f1 <<<"${K8S_VERSION#v}")"
VERSION_PKG=k8s.io/component-base/version
KUBECP_LDFLAGS="-s -w -X ${VERSION_PKG}.gitVersion=${K8S_VERSION} -X ${VERSION_PKG}.gitMajor=${K8S_MAJOR}"
KUBECP_LDFLAGS+=" -X ${VERSION_PKG}.gitMinor=${K8S_MINOR} -X ${VERSION_PKG}.gitTreeState=clean"
KUBECP_KEY="${GO_VERSION} ${KUBECP_LDFLAGS} $(cat go.mod go.sum main.go | sha256sum | cut -d' ' -f1)"
if fresh kubecp "${KUBECP_KEY}"; then
	echo "build.sh: kubecp ${K8S_VERSION} is up to date"
else
	timed "kubecp ${K8S_VERSION} (a cold build takes ~15 min on 2 cores)" \
		go build -trimpath -ldflags "${KUBECP_LDFLAGS}" -o "${BIN}/kubecp" .
	stamp kubecp "${KUBECP_KEY}"
fi
for tool in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
	ln -sfn kubecp "${BIN}/${tool}"
done

# kwok and helm are separate modules with their own dependency graphs: `go install pkg@version` keeps
# them out of the wrapper's go.mod.
KWOK_KEY="${GO_VERSION} ${KWOK_VERSION}"
if fresh kwok "${KWOK_KEY}"; then
	echo "build.sh: kwok ${KWOK_VERSION} is up to date"
else
	timed "kwok ${KWOK_VERSION}" env GOBIN="${BIN}" go install -trimpath \
		-ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
		"sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
	stamp kwok "${KWOK_KEY}"
fi

# helm's own Makefile stamps the version this way; without it `helm version` says "v3.22" with no
# patch level, and kubernetes.core parses that output.
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
HELM_LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
HELM_KEY="${GO_VERSION} ${HELM_LDFLAGS}"
if fresh helm "${HELM_KEY}"; then
	echo "build.sh: helm ${HELM_VERSION} is up to date"
else
	timed "helm ${HELM_VERSION}" env GOBIN="${BIN}" go install -trimpath -ldflags "${HELM_LDFLAGS}" \
		"helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
	stamp helm "${HELM_KEY}"
fi

# Smoke-check that every tool starts and reports the pinned version.
"${BIN}/kube-apiserver" --version | grep -qx "Kubernetes ${K8S_VERSION}" ||
	{ echo "build.sh: kube-apiserver does not report ${K8S_VERSION}" >&2; exit 1; }
"${BIN}/helm" version --short | grep -q "^${HELM_VERSION}" ||
	{ echo "build.sh: helm does not report ${HELM_VERSION}" >&2; exit 1; }
"${BIN}/kwok" --version >/dev/null
echo "build.sh: ${BIN} holds Kubernetes ${K8S_VERSION}, etcd $("${BIN}/etcd" --version | sed -n 's/^etcd Version: //p')," \
	"kwok ${KWOK_VERSION}, helm ${HELM_VERSION}"
echo "build.sh: done in ${SECONDS} s"
