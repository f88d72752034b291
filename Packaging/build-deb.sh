#!/usr/bin/env bash
# Builds railgate_VERSION_ARCH.deb with dpkg-deb from the release binaries (Swift runtime linked
# statically, stripped). Depends: is computed by dpkg-shlibdeps from the binaries' real shared
# libraries. Usage: Packaging/build-deb.sh [OUTDIR] (default .build/deb); prints the .deb's path.
# Expects `swift build -c release --static-swift-stdlib` to have been run (make deb does).
# For a cross build (README, "Building for arm64 boxes"): RELEASE_DIR (where the binaries are),
# DEB_ARCH (the Debian architecture, e.g. arm64) and STRIP (e.g. aarch64-linux-gnu-strip).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-.build/deb}
release=${RELEASE_DIR:-.build/release}
strip=${STRIP:-strip}
maintainer=${DEB_MAINTAINER:-railgate developers <railgate@example.org>}
version=$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' Sources/RailgateCore/BirthMessage.swift)
arch=${DEB_ARCH:-$(dpkg --print-architecture)}
[ -n "$version" ] || { echo "build-deb: cannot read the version from BirthMessage.swift" >&2; exit 1; }
completions=${COMPLETIONS_DIR:-.build/completions}
man=${MAN_DIR:-.build/man}
for binary in railgate railgate-sim; do
    [ -x "$release/$binary" ] || { echo "build-deb: $release/$binary missing: run make deb" >&2; exit 1; }
    for file in "$completions/$binary.bash" "$completions/_$binary" "$completions/$binary.fish" "$man/$binary.1"; do
        [ -s "$file" ] || { echo "build-deb: $file missing: run make completions man (make deb does)" >&2; exit 1; }
    done
done

root=$out/root
rm -rf "$root"
mkdir -p "$root/DEBIAN"
# Installed files: the same layout as `make install`.
install -D -m 0755 "$release/railgate" "$root/usr/bin/railgate"
install -D -m 0755 "$release/railgate-sim" "$root/usr/bin/railgate-sim"
$strip --strip-unneeded --remove-section=.comment "$root/usr/bin/railgate" \
    "$root/usr/bin/railgate-sim"
install -D -m 0644 Systemd/railgate.service "$root/usr/lib/systemd/system/railgate.service"
install -D -m 0644 Systemd/railgate.sysusers "$root/usr/lib/sysusers.d/railgate.conf"
install -D -m 0644 Systemd/railgate.tmpfiles "$root/usr/lib/tmpfiles.d/railgate.conf"
install -d "$root/usr/share/railgate/profiles"
install -m 0644 Firmware-config/profiles/*.toml "$root/usr/share/railgate/profiles/"
install -d "$root/usr/share/doc/railgate/examples"
install -m 0644 Firmware-config/examples/*.toml "$root/usr/share/doc/railgate/examples/"
gzip -9n -c README.md >"$root/usr/share/doc/railgate/README.md.gz"
install -m 0644 Packaging/debian/copyright "$root/usr/share/doc/railgate/copyright"
# Completions and man pages, generated from the command definitions (make completions man).
for binary in railgate railgate-sim; do
    install -D -m 0644 "$completions/$binary.bash" "$root/usr/share/bash-completion/completions/$binary"
    install -D -m 0644 "$completions/_$binary" "$root/usr/share/zsh/vendor-completions/_$binary"
    install -D -m 0644 "$completions/$binary.fish" "$root/usr/share/fish/vendor_completions.d/$binary.fish"
    install -d "$root/usr/share/man/man1"
    gzip -9n -c "$man/$binary.1" >"$root/usr/share/man/man1/$binary.1.gz"
done
date=$(git log -1 --format=%aD 2>/dev/null || date -R)
printf 'railgate (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
    "$version" "$version" "$maintainer" "$date" | gzip -9n >"$root/usr/share/doc/railgate/changelog.gz"
# The example configuration as a conffile; postinst makes it root:railgate 0640 (a stat override).
install -D -m 0640 Firmware-config/examples/wagon.toml "$root/etc/railgate/railgate.toml"
echo /etc/railgate/railgate.toml >"$root/DEBIAN/conffiles"
install -m 0755 Packaging/debian/postinst Packaging/debian/prerm Packaging/debian/postrm "$root/DEBIAN/"

# Depends: from the shared libraries the binaries really load (NEEDED), mapped to packages.
shlib=$out/shlibdeps
rm -rf "$shlib"
mkdir -p "$shlib/debian"
printf 'Source: railgate\n\nPackage: railgate\nArchitecture: any\n' >"$shlib/debian/control"
libraries=$(cd "$shlib" && dpkg-shlibdeps -O "$OLDPWD/$root/usr/bin/railgate" "$OLDPWD/$root/usr/bin/railgate-sim" \
    2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$libraries" ] || { echo "build-deb: dpkg-shlibdeps found no libraries" >&2; exit 1; }
# systemd-sysusers and systemd-tmpfiles (postinst), deb-systemd-helper/invoke (the unit's state).
depends="$libraries, systemd, init-system-helpers (>= 1.54)"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)

cat >"$root/DEBIAN/control" <<CONTROL
Package: railgate
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends
Section: net
Priority: optional
Description: telemetry gateway from Modbus and GPIO to MQTT
 railgate polls Modbus RTU and TCP devices (libmodbus) and watches gate
 barriers' limit switches over GPIO (libgpiod), keeps every record in a
 durable disk buffer and forwards it to an MQTT broker (libmosquitto) at
 least once, with sequence numbers, so that nothing is lost across
 outages, power cuts and restarts.
 .
 The package installs the daemon as a hardened systemd service
 (Type=notify with a watchdog) running as the railgate user, the device
 profiles, and an example configuration in /etc/railgate/railgate.toml.
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

deb=$out/railgate_${version}_${arch}.deb
rm -f "$out"/railgate_*.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
