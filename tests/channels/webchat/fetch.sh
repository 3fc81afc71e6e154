#!/usr/bin/env bash
# Fetches the browser bundle of botfront's rasa-webchat widget for tests/channels/test_webchat_browser.py.
# `npm pack` downloads the one tarball (the bundle holds React and socket.io-client): no
# node_modules, a second or two. The bundle's checksum is pinned: another file fails here.
set -euo pipefail
VERSION=1.0.1
SHA256=bfedd788e4bd7df12f64b5bf2963e634f84bac1cb176b6cede60c507d3553f1e
dest="$(cd "$(dirname "$0")" && pwd)/.cache"
bundle="$dest/rasa-webchat-$VERSION.js"
if [ -f "$bundle" ] && echo "$SHA256  $bundle" | sha256sum --check --status; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "rasa-webchat@$VERSION" >/dev/null)
tar -xzf "$work/rasa-webchat-$VERSION.tgz" -C "$work" package/lib/index.js
echo "$SHA256  $work/package/lib/index.js" | sha256sum --check --status \
  || { echo "rasa-webchat $VERSION: unexpected checksum of lib/index.js" >&2; exit 1; }
mkdir -p "$dest"
mv "$work/package/lib/index.js" "$bundle"
echo "rasa-webchat $VERSION: $bundle"
