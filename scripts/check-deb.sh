#!/usr/bin/env bash
# Checks a lookout .deb built by scripts/package-deb.sh, without installing it.
#
#   scripts/check-deb.sh target/debian/lookout_<version>_<arch>.deb
#
# - control fields (package, version, architecture, Depends on libc6 and adduser);
# - the expected files, with their modes and root ownership; the conffile list;
# - the maintainer scripts parse (`sh -n`) and are executable;
# - the md5sums match the files;
# - the systemd unit passes `systemd-analyze verify` (skipped, with a note, where
#   systemd-analyze is absent), and `systemd-analyze security` prints its exposure score;
# - the shared libraries the binary needs are all in libc6/libgcc-s1 (else a warning: the
#   package would need more Depends);
# - lintian reports nothing at warning level or above beyond packaging/lintian-overrides
#   (skipped, with a note, where lintian is absent).
# Needs dpkg-deb; installs nothing. Exit code 0 when every check passed, 1 otherwise.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: scripts/check-deb.sh DEB" >&2
    exit 2
fi
[ -f "$1" ] || { echo "scripts/check-deb.sh: no such file: $1" >&2; exit 2; }
deb="$(realpath "$1")"
cd "$(dirname "$0")/.."

failures=0
pass() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }
note() { echo "note  $*"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dpkg-deb --info "$deb" >"$work/info"
dpkg-deb --contents "$deb" >"$work/contents"
dpkg-deb --control "$deb" "$work/DEBIAN"
dpkg-deb --extract "$deb" "$work/root"

# --- control ---------------------------------------------------------------------------
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = lookout ] && pass "Package: lookout" || fail "Package is '$(field Package)'"
arch="$(field Architecture)"
case "$arch" in
    arm64|armhf|amd64) pass "Architecture: $arch" ;;
    *) fail "Architecture '$arch' is not arm64, armhf or amd64" ;;
esac
case "$(basename "$deb")" in
    "lookout_$(field Version)_${arch}.deb") pass "file name matches Version and Architecture" ;;
    *) fail "file name $(basename "$deb") does not match lookout_$(field Version)_${arch}.deb" ;;
esac
depends="$(field Depends)"
if grep -Eq 'libc6 \(>= [0-9.]+\)' <<<"$depends" && grep -q adduser <<<"$depends"; then
    pass "Depends: $depends"
else
    fail "Depends lacks libc6 (>= ...) or adduser: $depends"
fi
for f in Maintainer Section Priority Installed-Size Description; do
    [ -n "$(field "$f")" ] && pass "$f present" || fail "$f missing"
done

# --- files ---------------------------------------------------------------------------
# path  mode (as `dpkg-deb --contents` prints it)
expected="
./usr/bin/lookout -rwxr-xr-x
./etc/lookout/lookout.toml -rw-r--r--
./usr/share/lookout/default.onnx -rw-r--r--
./usr/share/lookout/default.labels.txt -rw-r--r--
./lib/systemd/system/lookout.service -rw-r--r--
./lib/udev/rules.d/99-lookout-gpio.rules -rw-r--r--
./usr/share/doc/lookout/README.md -rw-r--r--
./usr/share/doc/lookout/copyright -rw-r--r--
./usr/share/doc/lookout/events.md -rw-r--r--
./usr/share/doc/lookout/MODEL_CARD.md -rw-r--r--
./usr/share/doc/lookout/examples/rpi-csi.toml -rw-r--r--
"
while read -r path mode; do
    [ -n "$path" ] || continue
    line="$(awk -v p="$path" '$6 == p' "$work/contents")"
    if [ -z "$line" ]; then
        fail "missing $path"
    elif [ "$(awk '{print $1}' <<<"$line")" != "$mode" ]; then
        fail "$path has mode $(awk '{print $1}' <<<"$line"), expected $mode"
    else
        pass "$path $mode"
    fi
done <<<"$expected"
if awk '$1 ~ /^d/ && $1 != "drwxr-xr-x" { bad = 1 } END { exit bad }' "$work/contents"; then
    pass "every directory drwxr-xr-x"
else
    fail "directories with other modes: $(awk '$1 ~ /^d/ && $1 != "drwxr-xr-x" {print $1, $6}' "$work/contents" | tr '\n' ' ')"
fi
if awk '$2 != "root/root" { bad = 1 } END { exit bad }' "$work/contents"; then
    pass "every entry owned by root/root"
else
    fail "entries not owned by root/root: $(awk '$2 != "root/root" {print $6}' "$work/contents" | tr '\n' ' ')"
fi
cmp -s config/lookout.toml "$work/root/etc/lookout/lookout.toml" 2>/dev/null \
    && pass "/etc/lookout/lookout.toml is config/lookout.toml" \
    || note "/etc/lookout/lookout.toml differs from config/lookout.toml in this checkout (an older .deb?)"

# --- conffiles, md5sums, maintainer scripts ------------------------------------------------
if [ -f "$work/DEBIAN/conffiles" ] && grep -qx /etc/lookout/lookout.toml "$work/DEBIAN/conffiles"; then
    pass "conffiles lists /etc/lookout/lookout.toml"
else
    fail "conffiles does not list /etc/lookout/lookout.toml"
fi
if [ -f "$work/DEBIAN/md5sums" ] && (cd "$work/root" && md5sum --quiet -c "$work/DEBIAN/md5sums"); then
    pass "md5sums match ($(wc -l <"$work/DEBIAN/md5sums") files)"
else
    fail "md5sums missing or not matching"
fi
for script in postinst prerm postrm; do
    if [ ! -f "$work/DEBIAN/$script" ]; then
        fail "no $script"
    elif ! sh -n "$work/DEBIAN/$script"; then
        fail "$script: sh -n reports a syntax error"
    elif [ ! -x "$work/DEBIAN/$script" ]; then
        fail "$script is not executable"
    else
        pass "$script parses (sh -n) and is executable"
    fi
done

# --- systemd unit ----------------------------------------------------------------------
unit="$work/root/lib/systemd/system/lookout.service"
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify runs against a root made of the unpacked package (so ExecStart= names the
    # packaged binary, which must exist and be executable) plus this machine's own units (the
    # targets and slices lookout.service depends on). Unknown keys and invalid values only
    # print warnings, so any output counts as a failure.
    vroot="$work/verify-root"
    cp -a "$work/root" "$vroot"
    # ExecReload= runs the target system's /bin/sh (essential on every Debian system).
    mkdir -p "$vroot/bin"
    cp -a "$(readlink -f /bin/sh)" "$vroot/bin/sh"
    mkdir -p "$vroot/usr/lib/systemd"
    cp -a /usr/lib/systemd/system "$vroot/usr/lib/systemd/" 2>/dev/null \
        || cp -a /lib/systemd/system "$vroot/usr/lib/systemd/"
    if systemd-analyze verify --root="$vroot" /lib/systemd/system/lookout.service >"$work/verify" 2>&1 \
        && [ ! -s "$work/verify" ]; then
        pass "systemd-analyze verify: no findings"
    else
        fail "systemd-analyze verify:"
        sed 's/^/      /' "$work/verify"
    fi
    if systemd-analyze security --offline=true --root="$vroot" /lib/systemd/system/lookout.service \
        >"$work/security" 2>&1; then
        note "systemd-analyze security: $(tail -n 1 "$work/security" | sed 's/^-> //')"
    fi
else
    note "systemd-analyze not found: the unit was not verified (systemd package)"
fi
grep -q '^Type=notify$' "$unit" && grep -q '^WatchdogSec=' "$unit" && grep -q '^StateDirectory=lookout$' "$unit" \
    && pass "unit: Type=notify, WatchdogSec, StateDirectory=lookout" \
    || fail "unit lacks Type=notify, WatchdogSec or StateDirectory=lookout"

# --- binary's shared libraries -------------------------------------------------------------
if command -v readelf >/dev/null 2>&1; then
    libs="$(readelf -d "$work/root/usr/bin/lookout" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
    other=""
    for lib in $libs; do
        case "$lib" in
            libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libgcc_s.so.*|ld-linux*) ;;
            *) other="$other $lib" ;;
        esac
    done
    if [ -z "$other" ]; then
        pass "binary needs only libc6/libgcc-s1 libraries: ${libs:-none (static)}"
    else
        fail "binary needs libraries outside libc6/libgcc-s1 (add them to Depends):$other"
    fi
fi

# --- lintian ---------------------------------------------------------------------------
# Every tag it still reports is explained in packaging/lintian-overrides (installed with the
# package, so lintian applies it); anything else at warning level or above fails.
if command -v lintian >/dev/null 2>&1; then
    if lintian --fail-on error,warning "$deb" >"$work/lintian" 2>&1; then
        pass "lintian: no errors or warnings beyond packaging/lintian-overrides"
    else
        fail "lintian:"
        grep -v 'running with root privileges' "$work/lintian" | sed 's/^/      /'
    fi
else
    note "lintian not found: the package was not linted (lintian package)"
fi

echo
if [ "$failures" -eq 0 ]; then
    echo "scripts/check-deb.sh: $deb: all checks passed"
else
    echo "scripts/check-deb.sh: $deb: $failures check(s) failed"
    exit 1
fi
