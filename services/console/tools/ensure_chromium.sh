#!/bin/sh
# The console's browser test drives Debian's chromium (services/console/tests). `make test` runs
# this first: chromium is installed when missing and we can (root with apt-get), otherwise we
# stop with a clear message. The test itself never skips.
set -eu
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make: installing Debian's chromium for the console's browser test"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q chromium >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -y -q chromium >/dev/null || {
            echo "make: apt-get could not install chromium, which the console's browser test needs" >&2
            exit 1
        }
    fi
    [ -x "$CHROMIUM" ] && exit 0
fi
echo "make: the console's browser test needs Debian's chromium at $CHROMIUM: as root, run 'apt-get install chromium'" >&2
exit 1
