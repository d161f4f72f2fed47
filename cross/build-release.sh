#!/usr/bin/env bash
# Builds a release tarball for a Raspberry Pi-class board:
#   cross/build-release.sh aarch64-unknown-linux-gnu
#   cross/build-release.sh armv7-unknown-linux-gnueabihf
# Output: dist/thermostat-server-VERSION-TARGET.tar.gz and its .sha256.
#
# Uses the `cross` tool when a Docker engine responds (glibc 2.31 floor), and Debian's
# cross toolchain otherwise (rustc-web with the target's std, glibc 2.34 floor). Run
# .ci/setup-cross once to install the Debian route.
set -euo pipefail

target=${1:-}
case "$target" in
    aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf) ;;
    *)
        echo "usage: $0 aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf" >&2
        exit 2
        ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
name="thermostat-server-$version-$target"

if command -v cross >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo "build-release: building $target with cross (Docker)" >&2
    export CROSS_CONFIG="$root/cross/Cross.toml"
    target_dir="$root/target/cross"
    CARGO_TARGET_DIR="$target_dir" cross build --release --locked --target "$target"
else
    echo "build-release: building $target with Debian's cross toolchain" >&2
    for tool in /usr/bin/cargo /usr/bin/rustc; do
        if [ ! -x "$tool" ]; then
            echo "build-release: $tool is missing; run .ci/setup-cross first" >&2
            exit 1
        fi
    done
    target_dir="$root/target/debian"
    # rustup's proxies come first on PATH and have no std for these targets.
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="$target_dir" \
        /usr/bin/cargo build --release --locked --target "$target"
fi

binary="$target_dir/$target/release/thermostat-server"
stage="$root/dist/$name"
"$root/cross/stage.sh" "$binary" "$stage"

# A fixed order, owner and time make the tarball depend only on its contents.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='@0' \
    -C "$root/dist" -czf "$root/dist/$name.tar.gz" "$name"
(cd "$root/dist" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
rm -rf "$stage"

size=$(stat -c %s "$binary")
echo "build-release: dist/$name.tar.gz (binary $size bytes)" >&2
