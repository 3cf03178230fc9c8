#!/bin/sh
# STAND-IN for https://get.k3s.io, used only by the molecule/cluster scenario. It honours the
# environment variables the roles pass to the real script (INSTALL_K3S_SKIP_DOWNLOAD,
# INSTALL_K3S_EXEC, INSTALL_K3S_BIN_DIR, INSTALL_K3S_SKIP_START, INSTALL_K3S_VERSION) and writes
# what the real one writes: the systemd unit and its env file, kubectl/crictl/ctr links and the
# k3s-uninstall.sh / k3s-agent-uninstall.sh and k3s-killall.sh scripts.
set -eu
fatal() { echo "[stand-in install.sh] $*" >&2; exit 1; }

[ "${INSTALL_K3S_SKIP_DOWNLOAD:-false}" = true ] || fatal "only air-gap installs (INSTALL_K3S_SKIP_DOWNLOAD=true)"
BIN_DIR=${INSTALL_K3S_BIN_DIR:-/usr/local/bin}
[ -x "$BIN_DIR/k3s" ] || fatal "$BIN_DIR/k3s is missing"
if [ -n "${INSTALL_K3S_VERSION:-}" ]; then
  "$BIN_DIR/k3s" --version | grep -qF "k3s version $INSTALL_K3S_VERSION " ||
    fatal "$BIN_DIR/k3s is not $INSTALL_K3S_VERSION"
fi

# shellcheck disable=SC2086
set -- ${INSTALL_K3S_EXEC:-}
case "${1:-}" in
  "" | -*) if [ -n "${K3S_URL:-}" ]; then CMD=agent; else CMD=server; fi ;;
  *) CMD=$1; shift ;;
esac
if [ "$CMD" = server ]; then NAME=k3s; else NAME=k3s-$CMD; fi
UNIT=/etc/systemd/system/$NAME.service
UNINSTALL=$BIN_DIR/$NAME-uninstall.sh
KILLALL=$BIN_DIR/k3s-killall.sh

for cmd in kubectl crictl ctr; do
  [ -e "$BIN_DIR/$cmd" ] || ln -sf k3s "$BIN_DIR/$cmd"
done

cat >"$KILLALL" <<KILL
#!/bin/sh
systemctl stop k3s k3s-agent 2>/dev/null || true
KILL
chmod 0755 "$KILLALL"

cat >"$UNINSTALL" <<UNINST
#!/bin/sh
set -x
$KILLALL
systemctl disable $NAME || true
rm -f $UNIT $UNIT.env
systemctl daemon-reload
if [ -f /etc/systemd/system/k3s.service ] || [ -f /etc/systemd/system/k3s-agent.service ]; then
  rm -f $UNINSTALL
  exit 0
fi
for cmd in kubectl crictl ctr; do
  [ -L "$BIN_DIR/\$cmd" ] && rm -f "$BIN_DIR/\$cmd"
done
rm -rf /etc/rancher/k3s /run/k3s /var/lib/rancher/k3s /var/lib/kubelet
rm -f $BIN_DIR/k3s $KILLALL
rm -f $UNINSTALL
UNINST
chmod 0755 "$UNINSTALL"

touch "$UNIT.env"
chmod 0600 "$UNIT.env"
cat >"$UNIT" <<UNITEOF
[Unit]
Description=Lightweight Kubernetes (molecule stand-in)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
EnvironmentFile=-$UNIT.env
ExecStart=$BIN_DIR/k3s $CMD $*
Restart=always
RestartSec=5s

[Install]
WantedBy=multi-user.target
UNITEOF

systemctl daemon-reload
systemctl enable "$NAME"
if [ "${INSTALL_K3S_SKIP_START:-false}" != true ]; then
  systemctl restart "$NAME"
fi
echo "[stand-in install.sh] installed $NAME ($INSTALL_K3S_VERSION)"
