#!/usr/bin/env bash
# Build edgeagent_<version>_<arch>.deb from this checkout:
#   /opt/edgeagent           a self-contained virtualenv on Debian's python3
#   /usr/bin/edgeagent       a symlink into it
#   /etc/edgeagent/          config.yaml and edgeagent.env (conffiles)
#   the systemd unit, the sysusers.d entry, and maintainer scripts written as dh_installsystemd writes them
# Usage: packaging/debian/build.sh [output directory]   (default: dist/)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$root/dist}" && cd "${1:-$root/dist}" && pwd)
python=${PYTHON:-/usr/bin/python3}
version=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$root/pyproject.toml")
arch=$(dpkg --print-architecture)
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
venv="$stage/opt/edgeagent"

# The virtualenv is built in the staging tree and then moved in place by path rewriting: its
# scripts' shebangs and activate files name the final path, and bytecode is compiled with it.
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --no-compile --no-cache-dir "$root"
# pip and setuptools (which venv adds) only install: the agent imports neither, and setuptools alone
# was a fifth of the package. Twice quiet: Python 3.12's venv has no setuptools, which is no warning
"$venv/bin/pip" uninstall --quiet --quiet --yes pip setuptools
# the versioned interpreter (python3.11), not python3: the modules and extensions are for this version,
# and the next Debian release's python3 would find none of them
ln -sfn "$(readlink -f "$python")" "$venv/bin/python3"
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1 "$venv"/bin/pip*
grep -rlI --null "$stage/opt/edgeagent" "$venv/bin" "$venv/pyvenv.cfg" | xargs -0 -r sed -i "s|$stage/opt/edgeagent|/opt/edgeagent|g"
find "$venv" -name '__pycache__' -prune -exec rm -rf {} +
find "$venv" -name '*.so' -exec strip --strip-unneeded {} + 2>/dev/null || true
"$python" -m compileall -q -j 0 -s "$stage" -p / "$venv/lib" >/dev/null
# only ELF objects and scripts stay executable
find "$venv/lib" -type f -perm /111 ! -name '*.so' ! -name '*.so.*' -exec chmod a-x {} +

install -d "$stage/usr/bin" "$stage/etc/edgeagent" "$stage/lib/systemd/system" "$stage/usr/lib/sysusers.d" \
    "$stage/usr/share/doc/edgeagent" "$stage/usr/share/lintian/overrides" "$stage/DEBIAN"
ln -s /opt/edgeagent/bin/edgeagent "$stage/usr/bin/edgeagent"
install -m 0644 "$here/config.yaml" "$stage/etc/edgeagent/config.yaml"
install -m 0600 "$here/edgeagent.env" "$stage/etc/edgeagent/edgeagent.env"
install -m 0644 "$root/systemd/edgeagent.service" "$stage/lib/systemd/system/edgeagent.service"
install -m 0644 "$root/systemd/edgeagent.sysusers" "$stage/usr/lib/sysusers.d/edgeagent.conf"
install -m 0644 "$here/copyright" "$stage/usr/share/doc/edgeagent/copyright"
install -m 0644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/edgeagent"
sed -e "s/@VERSION@/$version/" -e "s/@DATE@/$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}")/" \
    "$here/changelog" | gzip -9n > "$stage/usr/share/doc/edgeagent/changelog.gz"
for script in postinst prerm postrm; do
    install -m 0755 "$here/$script" "$stage/DEBIAN/$script"
done
printf '/etc/edgeagent/config.yaml\n/etc/edgeagent/edgeagent.env\n' > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@PYVER@/$pyver/" \
    "$here/control" > "$stage/DEBIAN/control"

deb="$out/edgeagent_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build -Zxz "$stage" "$deb" >/dev/null
echo "$deb"
