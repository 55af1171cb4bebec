#!/usr/bin/env bash
# Browser tests: tests/web.rs built for wasm32 and run in headless Chromium (WebGPU on
# SwiftShader) by wasm-bindgen-test-runner, then the quickstart page (examples/web) loaded and
# its numbers checked (scripts/check-page.py). Ends with the line "N passed, M failed".
#
# Installs what it needs when missing: Debian's chromium and chromium-driver, the wasm32
# target, and wasm-bindgen-cli at the version of the wasm-bindgen crate in Cargo.lock (the
# test runner must match it exactly).
set -uo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "== installing chromium and chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver || exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "== adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown || exit 1
fi
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ -z "$version" ]; then
    echo "no wasm-bindgen in Cargo.lock (run: cargo generate-lockfile)"
    exit 1
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q " $version\$"; then
    echo "== installing wasm-bindgen-cli $version"
    # Not --locked: the CLI's own lockfile can name a release a registry mirror lacks.
    cargo install wasm-bindgen-cli --version "$version" || exit 1
fi

# Cargo's target directory, wherever CARGO_TARGET_DIR or a config puts it.
target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || exit 1

export CHROMEDRIVER=${CHROMEDRIVER:-$(command -v chromedriver)}
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-600}
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
log="$target/browser-tests.log"
mkdir -p "$target"

echo "== browser tests (tests/web.rs) in headless Chromium"
# webdriver.json (the repository root) gives Chromium its WebGPU flags.
cargo test --release --target wasm32-unknown-unknown --test web -- --nocapture 2>&1 | tee "$log"
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{ s += $1 } END { print s + 0 }')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{ s += $1 } END { print s + 0 }')
if ! grep -q '^test result: ' "$log"; then
    echo "the browser tests did not run"
    failed=$((failed + 1))
fi

echo "== the quickstart page (examples/web) in headless Chromium"
site="$target/web-site"
rm -rf "$site" && mkdir -p "$site"
if cargo build --release --target wasm32-unknown-unknown --example web &&
    wasm-bindgen --target web --no-typescript --out-dir "$site/pkg" \
        "$target/wasm32-unknown-unknown/release/examples/web.wasm" &&
    cp examples/web/index.html "$site/" &&
    python3 scripts/check-page.py "$site" "$target/web-page.png"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
