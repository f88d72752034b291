#!/usr/bin/env bash
# Checks the package `make deb` built: its control fields (Depends: computed from the binaries'
# shared libraries), its contents with owners and modes, stripped binaries with the Swift
# runtime linked in, maintainer scripts that pass `sh -n`, and lintian with no error.
# Usage: Tests/System/deb-test.sh .build/deb/railgate_VERSION_ARCH.deb
set -euo pipefail
deb=${1:?usage: deb-test.sh PATH.deb}
fail() { echo "FAIL deb-test: $*"; exit 1; }
[ -f "$deb" ] || fail "$deb missing (make deb)"

info=$(dpkg-deb --info "$deb")
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = railgate ] || fail "Package is not railgate"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture: $(field Architecture)"
case "$(basename "$deb")" in "railgate_$(field Version)_$(field Architecture).deb") ;; *) fail "file name $deb" ;; esac
depends=$(field Depends)
# Every library the binary loads, by package: Debian 12 names (libgpiod2 is libgpiod v1's runtime).
for package in libc6 libmodbus5 libmosquitto1 libgpiod2 zlib1g libstdc++6 libgcc-s1 systemd init-system-helpers; do
    printf '%s\n' "$depends" | tr ',' '\n' | grep -q "^ *$package\( \|$\)" || fail "Depends lacks $package: $depends"
done
# The Swift runtime is inside the binary, so no Swift package is needed.
if printf '%s' "$depends" | grep -qi swift; then fail "Depends names Swift: $depends"; fi
for script in postinst prerm postrm conffiles md5sums; do
    printf '%s\n' "$info" | grep -q " $script" || fail "control archive lacks $script"
done

contents=$(dpkg-deb --contents "$deb")
expect() { # MODE OWNER PATH
    printf '%s\n' "$contents" | grep -qE "^$1 $2 +[0-9]+ [-0-9]+ [0-9:]+ \\./$3\$" || fail "no $1 $2 $3 in the contents"
}
expect -rwxr-xr-x root/root usr/bin/railgate
expect -rwxr-xr-x root/root usr/bin/railgate-sim
expect -rw-r--r-- root/root usr/lib/systemd/system/railgate.service
expect -rw-r--r-- root/root usr/lib/sysusers.d/railgate.conf
expect -rw-r--r-- root/root usr/lib/tmpfiles.d/railgate.conf
expect -rw-r--r-- root/root usr/share/railgate/profiles/axle-bearing-sensor.toml
expect -rw-r--r-- root/root usr/share/doc/railgate/copyright
for tool in railgate railgate-sim; do
    expect -rw-r--r-- root/root "usr/share/man/man1/$tool.1.gz"
    expect -rw-r--r-- root/root "usr/share/bash-completion/completions/$tool"
    expect -rw-r--r-- root/root "usr/share/zsh/vendor-completions/_$tool"
    expect -rw-r--r-- root/root "usr/share/fish/vendor_completions.d/$tool.fish"
done
expect -rw-r----- root/root etc/railgate/railgate.toml

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb --raw-extract "$deb" "$work"
grep -qx /etc/railgate/railgate.toml "$work/DEBIAN/conffiles" || fail "railgate.toml is not a conffile"
for script in postinst prerm postrm; do sh -n "$work/DEBIAN/$script" || fail "$script: syntax"; done
grep -q 'dpkg-statoverride --update --add root railgate 0640 /etc/railgate/railgate.toml' "$work/DEBIAN/postinst" ||
    fail "postinst does not make the configuration root:railgate 0640"
for binary in railgate railgate-sim; do
    file=$work/usr/bin/$binary
    if readelf -S "$file" | grep -q '\.symtab'; then fail "$binary is not stripped"; fi
    if objdump -p "$file" | grep NEEDED | grep -qi swift; then fail "$binary loads a shared Swift library"; fi
done
"$work/usr/bin/railgate" --version >/dev/null 2>&1 || "$work/usr/bin/railgate" --help >/dev/null ||
    fail "the packaged railgate does not run"

if command -v lintian >/dev/null; then
    lintian_output=$(lintian --fail-on error --tag-display-limit 0 "$deb" 2>&1) || {
        printf '%s\n' "$lintian_output"
        fail "lintian reports errors"
    }
    printf '%s\n' "$lintian_output" | sed 's/^/  lintian: /'
else
    echo "SKIP lintian: not installed (apt-get install lintian)"
fi
echo "ok deb-test: $(basename "$deb") $(stat -c %s "$deb") bytes, railgate $(stat -c %s "$work/usr/bin/railgate") bytes installed"
echo "  Depends: $depends"
