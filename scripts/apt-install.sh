#!/usr/bin/env bash
# Installs Debian packages with apt-get, as root or through sudo, saying which and for whom.
#
#   scripts/apt-install.sh WHO PACKAGE...    # WHO names the caller in the message
#
# The callers (scripts/run, scripts/test, scripts/build-arm.sh) work out what is missing and
# call this only when something is.
set -euo pipefail
who="$1"
shift
[ $# -gt 0 ] || exit 0
echo "$who: installing Debian packages: $*"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "$who: these Debian packages are missing: $*; install them as root (apt-get install $*)" >&2
        exit 2
    fi
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
