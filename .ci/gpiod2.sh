#!/usr/bin/env bash
# Builds railgate against libgpiod 2.x (the v2 API) without replacing the system's libgpiod 1.6:
# libgpiod-dev, libgpiod3 and gpiod (the v2 tools) 2.1.3 from bookworm-backports are fetched
# with apt-get download (a scratch apt configuration adds bookworm-backports when the system's
# sources lack it), unpacked with dpkg-deb -x into .build/gpiod2, and found through
# PKG_CONFIG_PATH; the build goes to .build-gpiod2 (rpath to .build/gpiod2's library).
#   .ci/gpiod2.sh fetch                  only fetch and unpack (prints the folder)
#   .ci/gpiod2.sh build [swift build args]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION=${RAILGATE_GPIOD2_VERSION:-2.1.3-1~bpo12+1}
DEST=$ROOT/.build/gpiod2
LIBDIR=$DEST/usr/lib/x86_64-linux-gnu

fetch() {
  if [ -f "$DEST/.complete-$VERSION" ]; then return; fi
  local apt=$ROOT/.build/gpiod2-apt
  rm -rf "$DEST" "$apt"
  mkdir -p "$apt/sources" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$DEST"
  cat > "$apt/sources/backports.sources" <<SOURCES
Types: deb
URIs: ${RAILGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/sources"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -qq
  (cd "$apt/debs" && apt-get "${opts[@]}" download "libgpiod-dev=$VERSION" "libgpiod3=$VERSION" "gpiod=$VERSION")
  for deb in "$apt/debs"/*.deb; do dpkg-deb -x "$deb" "$DEST"; done
  # The .pc says prefix=/usr: point it at the unpacked tree.
  sed -i "s|^prefix=.*|prefix=$DEST/usr|" "$LIBDIR/pkgconfig/libgpiod.pc"
  touch "$DEST/.complete-$VERSION"
}

case "${1:-build}" in
  fetch) fetch; echo "$DEST" ;;
  build)
    shift || true
    fetch
    # The other C libraries' .pc files name the system's library folder (-L${libdir}); SwiftPM
    # passes those on, and wherever one lands before libgpiod's own -L the linker takes the
    # system's libgpiod 1.6 for -lgpiod. Copies without the -L (the linker's default path finds
    # them anyway) leave the unpacked 2.x the only folder named.
    pcdir=$ROOT/.build/gpiod2-pc
    mkdir -p "$pcdir"
    for pc in zlib libmosquitto libcrypto libmodbus sqlite3; do
      sed -E 's/-L\$\{(shared)?libdir\}//g' "$(pkg-config --variable=pcfiledir "$pc")/$pc.pc" > "$pcdir/$pc.pc"
    done
    PKG_CONFIG_PATH=$LIBDIR/pkgconfig:$pcdir swift build --scratch-path .build-gpiod2 \
      -Xlinker -rpath -Xlinker "$LIBDIR" "$@"
    ;;
  *) echo "usage: .ci/gpiod2.sh fetch | build [swift build args]" >&2; exit 2 ;;
esac
