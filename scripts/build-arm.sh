#!/usr/bin/env bash
# Builds lookout for the ARM boards with Debian's cross compilers, and runs its tests under
# qemu-user, on a Debian/Ubuntu x86-64 machine without Docker. (With Docker, cross-rs works too:
# `cross build --release --target T`, configured by Cross.toml.)
#
#   scripts/build-arm.sh                 # release binaries: target/<triple>/release/lookout
#   scripts/build-arm.sh --test          # the tests that exercise tract's ARM kernels, emulated
#   scripts/build-arm.sh [--test] aarch64-unknown-linux-gnu   # one target only
#
# Targets: aarch64-unknown-linux-gnu (Raspberry Pi 3/4/5 on 64-bit Raspberry Pi OS, Jetson) and
# armv7-unknown-linux-gnueabihf (32-bit Raspberry Pi OS).
#
# Installs what is missing: Debian gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf, their
# libc6-dev-*-cross, qemu-user-static, libclang-dev (nokhwa's bindgen) and the rustup targets.
# Linkers and qemu runners are set through CARGO_TARGET_<TRIPLE>_* variables here rather than in
# .cargo/config.toml, so a native build on a Pi is unaffected.
#
# Emulation details: qemu-aarch64 gets `-cpu cortex-a76` (Raspberry Pi 5; with qemu's default
# CPU tract would pick SVE kernels no Pi has). Under qemu-arm tract cannot detect NEON, so
# TRACT_CPU_ARM32_NEON=1 forces its NEON kernels on, as a real Pi 2/3/4 detects them itself.
#
# --test runs the library's unit tests and the model-agreement (tests/reference.rs: tract vs
# onnxruntime on the real models and photos in LOOKOUT_ASSETS), quantized-model (tests/quant.rs),
# engine (tests/engine.rs: lookout's own convolution kernels, NEON on aarch64 and portable code
# on armv7, against onnxruntime on the benchmark models)
# and pipeline tests
# (tests/pipeline.rs). The sink and source tests start x86 programs (mosquitto, ffmpeg) and
# exercise no ARM-specific code, so they run on the host build only.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=build
targets=()
for arg in "$@"; do
    case "$arg" in
        --test) mode=test ;;
        aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf) targets+=("$arg") ;;
        -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "build-arm.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

need_pkgs=()
for t in "${targets[@]}"; do
    case "$t" in
        aarch64-*) command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need_pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
        armv7-*) command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || need_pkgs+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    esac
done
if [ "$mode" = test ]; then
    command -v qemu-aarch64-static >/dev/null 2>&1 || need_pkgs+=(qemu-user-static)
fi
dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null | grep -q "install ok installed" || need_pkgs+=(libclang-dev)
scripts/apt-install.sh build-arm.sh "${need_pkgs[@]}"
installed="$(rustup target list --installed)"
for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -cpu cortex-a76 -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm-static -cpu cortex-a15 -L /usr/arm-linux-gnueabihf"
export TRACT_CPU_ARM32_NEON=1

for t in "${targets[@]}"; do
    if [ "$mode" = test ]; then
        echo "build-arm.sh: testing $t under qemu-user"
        # Tests that start the lookout binary go through the same emulator.
        case "$t" in
            aarch64-*) export LOOKOUT_TEST_RUNNER="$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER" ;;
            armv7-*) export LOOKOUT_TEST_RUNNER="$CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER" ;;
        esac
        cargo test --locked --target "$t" -p lookout-engine --lib
        cargo test --locked --target "$t" -p lookout --lib --test reference --test quant --test engine --test pipeline
    else
        echo "build-arm.sh: building $t"
        cargo build --locked --release --target "$t"
        bin="target/$t/release/lookout"
        echo "build-arm.sh: $bin $(stat -c %s "$bin") bytes"
    fi
done
