#!/usr/bin/env bash
# Chromium and its driver from Debian's packages, for the dashboard's real-browser test
# (tests/test_dashboard.py, driven by Selenium from the test extra). Nothing to do when both are installed.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium chromium-driver
