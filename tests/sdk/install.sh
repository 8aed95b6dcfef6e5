#!/usr/bin/env bash
# Install the pinned @trigger.dev client for tests/test_sdk.py, once: a stamp
# inside node_modules records the hash of the lock it was installed from, so
# later runs cost a sha256sum unless package-lock.json changed.
set -euo pipefail
cd "$(dirname "$0")"

want=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.triggerfs-lock-sha256
if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
	exit 0
fi
npm ci --no-audit --no-fund --loglevel=error >&2
echo "$want" >"$stamp"
