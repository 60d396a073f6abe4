#!/bin/sh
# Runs the web client's browser test against an already running cluster:
#   CHORUS_GW1=http://127.0.0.1:7301 CHORUS_GW2=http://127.0.0.1:7302 tests/browser/run.sh
# Installs playwright-core (no browser download) from package-lock.json with `npm ci`
# when node_modules is missing or does not match the lock file; uses Debian's
# chromium (/usr/bin/chromium, or $CHROMIUM).  Exit status: 0 pass, 1 fail, 2 setup.
set -eu
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1; then
    echo "browser test: node is not installed (scripts/install-deps.sh installs it)" >&2
    exit 2
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
    echo "browser test: playwright-core (package.json) needs Node.js >= 18, this is $(node --version)" >&2
    exit 2
fi
want=$(node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')
have=$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch (e) { "" }')
if [ "$have" != "$want" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "browser test: npm is not installed (scripts/install-deps.sh installs it)" >&2
        exit 2
    fi
    echo "browser test: installing playwright-core $want (npm ci, no browser download)" >&2
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2 || {
        echo "browser test: npm ci failed (is the npm registry reachable?)" >&2
        exit 2
    }
fi
exec node chat.test.mjs "$@"
