#!/usr/bin/env bash
# Hide the shipped weights from a device call, and bring them back: bash scripts/device_slim.sh on|off|status
#
# The device call sends the working tree (tracked files, and untracked ones git does not ignore) under a 64 MiB
# limit, and the seven shipped weight files are about 130 MiB. "on" untracks them in the index only (no commit,
# the files stay on disk) and ignores them locally (.git/info/exclude), so they do not travel; their 8-bit
# copies travel in .device/init (pack_device_payload.py --slim) and are restored on the device. A pre-commit
# hook refuses any commit while "on", so the index change cannot reach the history. "off" undoes all three.
set -eu
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pattern='bundles/*/models/*.pt'
ignore_line="/$pattern"
exclude=$(git rev-parse --git-path info/exclude)
hook=$(git rev-parse --git-path hooks)/pre-commit
marker='# device_slim'
case "${1:-status}" in
on)
    git ls-files -z -- "$pattern" | xargs -0 -r git rm -q --cached --
    mkdir -p "$(dirname "$exclude")" "$(dirname "$hook")"
    grep -qxF "$ignore_line" "$exclude" 2> /dev/null || echo "$ignore_line" >> "$exclude"
    printf '#!/bin/sh\n%s\necho "device_slim is on: run bash scripts/device_slim.sh off before committing" >&2\nexit 1\n' \
        "$marker" > "$hook"
    chmod +x "$hook"
    echo "device_slim on: $(git status --porcelain -- bundles | wc -l) weight files untracked for the call"
    ;;
off)
    git reset -q -- bundles
    if [ -f "$exclude" ]; then
        grep -vxF "$ignore_line" "$exclude" > "$exclude.tmp" || true
        mv "$exclude.tmp" "$exclude"
    fi
    if [ -f "$hook" ] && grep -qxF "$marker" "$hook"; then rm -f "$hook"; fi
    echo "device_slim off: $(git ls-files -- "$pattern" | wc -l) weight files tracked"
    ;;
status)
    if [ -f "$hook" ] && grep -qxF "$marker" "$hook"; then echo on; else echo off; fi
    ;;
*)
    echo "usage: $0 on|off|status" >&2
    exit 2
    ;;
esac
