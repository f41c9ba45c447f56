#!/usr/bin/env bash
# Builds the Debian package of lookout for one target from an already built binary.
#
#   scripts/package-deb.sh TARGET [BINARY]
#
#   TARGET   aarch64-unknown-linux-gnu      -> arm64 (Raspberry Pi OS 64-bit, Jetson)
#            armv7-unknown-linux-gnueabihf  -> armhf (Raspberry Pi OS 32-bit)
#            x86_64-unknown-linux-gnu       -> amd64
#   BINARY   the lookout executable; default target/TARGET/release/lookout
#
# Writes target/debian/lookout_<version>_<arch>.deb and prints its path. Builds nothing: run
# `cross build --release --target TARGET` (or cargo) first. Needs dpkg-deb (Debian/Ubuntu);
# no root, no debhelper: ownership is set with `dpkg-deb --root-owner-group`.
#
# Contents: /usr/bin/lookout; /etc/lookout/lookout.toml (a conffile: upgrades keep local
# edits); the bundled model under /usr/share/lookout/; the systemd unit and the GPIO udev rule
# from packaging/; README, event schema, model card and example configurations under
# /usr/share/doc/lookout/. Maintainer scripts: packaging/{postinst,prerm,postrm}.
# Check the result with scripts/check-deb.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: scripts/package-deb.sh TARGET [BINARY]" >&2
    echo "  TARGET: aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | x86_64-unknown-linux-gnu" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
target="$1"
binary="${2:-target/$target/release/lookout}"

# Debian architecture, and the ELF machine `readelf -h` reports for a binary built for it.
case "$target" in
    aarch64-unknown-linux-gnu)     arch=arm64; elf_machine="AArch64"; strip_tool=aarch64-linux-gnu-strip ;;
    armv7-unknown-linux-gnueabihf) arch=armhf; elf_machine="ARM"; strip_tool=arm-linux-gnueabihf-strip ;;
    x86_64-unknown-linux-gnu)      arch=amd64; elf_machine="X86-64"; strip_tool=strip ;;
    *) echo "scripts/package-deb.sh: unsupported target '$target'" >&2; usage ;;
esac

if [ ! -f "$binary" ]; then
    echo "scripts/package-deb.sh: binary not found: $binary" >&2
    echo "  build it first: cross build --release --target $target" >&2
    echo "  (or cargo build --release --target $target with a cross linker set up)" >&2
    if [ -x scripts/build-arm.sh ]; then
        echo "  (or scripts/build-arm.sh)" >&2
    fi
    exit 1
fi
command -v dpkg-deb >/dev/null 2>&1 || {
    echo "scripts/package-deb.sh: dpkg-deb not found (apt-get install dpkg)" >&2
    exit 1
}

# A binary for the wrong machine would install fine and fail with "Exec format error".
if command -v readelf >/dev/null 2>&1; then
    machine="$(readelf -h "$binary" 2>/dev/null | sed -n 's/^ *Machine: *//p')"
    case "$machine" in
        *"$elf_machine"*) ;;
        *)
            echo "scripts/package-deb.sh: $binary is not built for $target (ELF machine: ${machine:-not an ELF file})" >&2
            exit 1
            ;;
    esac
fi

# The [package] version from Cargo.toml (its first `version =` line). A Rust pre-release
# "1.2.0-rc.1" becomes "1.2.0~rc.1", which Debian sorts before "1.2.0".
version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)"
if [ -z "$version" ]; then
    echo "scripts/package-deb.sh: no version = \"...\" line in Cargo.toml" >&2
    exit 1
fi
deb_version="${version/-/\~}"

# glibc floor: 2.31 (Debian 11, Ubuntu 20.04 / JetPack 5). A binary linked against newer
# symbol versions (built on a newer distribution than the cross image) raises it.
libc_min="2.31"
if command -v readelf >/dev/null 2>&1; then
    needed="$(readelf -V --wide "$binary" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -u -V | tail -n 1 || true)"
    if [ -n "$needed" ] && [ "$(printf '%s\n%s\n' "$libc_min" "$needed" | sort -V | tail -n 1)" != "$libc_min" ]; then
        echo "scripts/package-deb.sh: $binary needs glibc $needed; Depends raised from libc6 (>= $libc_min)" >&2
        libc_min="$needed"
    fi
fi

for f in config/lookout.toml models/default.onnx models/default.labels.txt models/MODEL_CARD.md \
    packaging/lookout.service packaging/99-lookout-gpio.rules \
    packaging/postinst packaging/prerm packaging/postrm README.md docs/events.md; do
    [ -f "$f" ] || { echo "scripts/package-deb.sh: missing $f" >&2; exit 1; }
done

out_dir=target/debian
deb="$out_dir/lookout_${deb_version}_${arch}.deb"
mkdir -p "$out_dir"
root="$(mktemp -d "$out_dir/root.XXXXXX")"
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root" # mktemp made it 0700; it becomes the package's "./" entry

# Modes are set explicitly so that the caller's umask does not leak into the package.
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/etc/lookout" "$root/usr/share/lookout" \
    "$root/lib/systemd/system" "$root/lib/udev/rules.d" "$root/usr/share/doc/lookout/examples"
install -m 0755 "$binary" "$root/usr/bin/lookout"
# Release builds are stripped already; a test-profile binary is stripped here (as dh_strip
# would), with the target's binutils (installed with its cross compiler).
if ! command -v "${STRIP:-$strip_tool}" >/dev/null 2>&1; then
    echo "package-deb.sh: ${STRIP:-$strip_tool} not found: install the target's binutils (or set STRIP)" >&2
    exit 1
fi
"${STRIP:-$strip_tool}" --strip-unneeded "$root/usr/bin/lookout"
install -m 0644 config/lookout.toml "$root/etc/lookout/lookout.toml"
install -m 0644 models/default.onnx models/default.labels.txt "$root/usr/share/lookout/"
install -m 0644 packaging/lookout.service "$root/lib/systemd/system/lookout.service"
install -m 0644 packaging/99-lookout-gpio.rules "$root/lib/udev/rules.d/99-lookout-gpio.rules"
install -m 0644 README.md docs/events.md models/MODEL_CARD.md "$root/usr/share/doc/lookout/"
install -m 0644 config/examples/*.toml "$root/usr/share/doc/lookout/examples/"
install -d -m 0755 "$root/usr/share/lintian/overrides"
install -m 0644 packaging/lintian-overrides "$root/usr/share/lintian/overrides/lookout"
cat >"$root/usr/share/doc/lookout/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lookout

Files: *
Copyright: 2026 lookout developers
License: MIT or Apache-2.0
 The full license texts are in /usr/share/common-licenses/Apache-2.0 and at
 https://opensource.org/license/mit.
EOF
chmod 0644 "$root/usr/share/doc/lookout/copyright"

install -m 0755 packaging/postinst packaging/prerm packaging/postrm "$root/DEBIAN/"
echo /etc/lookout/lookout.toml >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

installed_kb="$(du -sk --exclude=DEBIAN "$root" | cut -f 1)"
cat >"$root/DEBIAN/control" <<EOF
Package: lookout
Version: $deb_version
Architecture: $arch
Maintainer: lookout developers
Section: misc
Priority: optional
Installed-Size: $installed_kb
Depends: libc6 (>= $libc_min), adduser
Recommends: ffmpeg
Suggests: mosquitto
Description: edge computer-vision inference daemon
 lookout grabs camera frames (V4L2 cameras, the output of programs such as
 ffmpeg or rpicam-vid, HTTP MJPEG streams, image files), classifies them with an
 ONNX image classifier (fp32 or int8) through tract, turns scores into events
 with per-class rules, and sends the events to logs, JSON lines files, MQTT
 (with Home Assistant discovery), webhooks, commands, GPIO lines and JPEG
 snapshots.
 .
 This package runs it as the systemd service lookout.service, as the system
 user lookout, configured by /etc/lookout/lookout.toml, with its state in
 /var/lib/lookout. It includes a small demonstration model.
EOF
chmod 0644 "$root/DEBIAN/control"

# xz: every dpkg on the supported systems reads it (Ubuntu's default, zstd, needs dpkg 1.21.18).
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
