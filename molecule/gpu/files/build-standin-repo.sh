#!/usr/bin/env bash
# STAND-IN for NVIDIA's apt repository https://nvidia.github.io/libnvidia-container (unreachable
# here), used only by the molecule/gpu scenario. Builds a flat apt repository with the four packages
# of a toolkit release at NVIDIA's version and dependencies, signed with a key made for the run:
#   nvidia-container-toolkit-base  /usr/bin/nvidia-ctk, /usr/bin/nvidia-container-runtime, built from
#                                  NVIDIA's Go source (github.com/NVIDIA/nvidia-container-toolkit)
#   nvidia-container-toolkit, libnvidia-container-tools, libnvidia-container1
#                                  empty stand-ins (the real ones hold nvidia-container-runtime-hook and
#                                  the C library libnvidia-container; no GPU here to use them)
# Usage: build-standin-repo.sh VERSION BIN_DIR REPO_DIR   (BIN_DIR holds the two Go binaries)
# Writes REPO_DIR/{*.deb,Packages,Release,InRelease,gpgkey,fingerprint}.
set -euo pipefail
version=$1 bin=$2 repo=$3
revision=1
full=$version-$revision
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$repo" && mkdir -p "$repo"

package() {  # name depends [file...]: files are copied from BIN_DIR into /usr/bin
  local name=$1 depends=$2 root=$work/$1
  shift 2
  mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$name"
  for file in "$@"; do install -D -m 0755 "$bin/$file" "$root/usr/bin/$file"; done
  echo "STAND-IN package of the molecule/gpu scenario (NVIDIA's repository is unreachable here)." \
    >"$root/usr/share/doc/$name/README.stand-in"
  {
    echo "Package: $name"
    echo "Version: $full"
    echo "Architecture: amd64"
    echo "Maintainer: ailab molecule stand-in <standin@ailab.invalid>"
    [ -z "$depends" ] || echo "Depends: $depends"
    echo "Description: STAND-IN for NVIDIA's $name $full (molecule/gpu)"
  } >"$root/DEBIAN/control"
  dpkg-deb --root-owner-group -Zgzip --build "$root" "$repo/${name}_${full}_amd64.deb" >/dev/null
}
package libnvidia-container1 ""
package libnvidia-container-tools "libnvidia-container1 (>= $full)"
package nvidia-container-toolkit-base "" nvidia-ctk nvidia-container-runtime
package nvidia-container-toolkit \
  "nvidia-container-toolkit-base (= $full), libnvidia-container-tools (>= $full), libnvidia-container-tools (<< 2.0.0)"

cd "$repo"
for deb in *.deb; do
  dpkg-deb -f "$deb"
  echo "Filename: ./$deb"
  echo "Size: $(stat -c %s "$deb")"
  echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
  echo
done >Packages
{
  echo "Origin: ailab molecule stand-in"
  echo "Label: nvidia-container-toolkit stand-in"
  echo "Date: $(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')"
  echo "SHA256:"
  echo " $(sha256sum Packages | cut -d' ' -f1) $(stat -c %s Packages) Packages"
} >Release

export GNUPGHOME=$work/gnupg
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key "ailab molecule stand-in <standin@ailab.invalid>" ed25519 sign 1d
gpg --batch --quiet --armor --export >gpgkey
gpg --batch --quiet --clearsign --output InRelease Release
gpg --batch --quiet --with-colons --fingerprint 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }' >fingerprint
