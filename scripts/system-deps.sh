#!/usr/bin/env bash
# System packages the tests need beyond Python: Debian's Chromium, driven headless by
# Playwright in the dashboard test (Playwright's own browser download is never used).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "the dashboard test needs Chromium: install Debian's 'chromium' package" >&2
  exit 1
fi
