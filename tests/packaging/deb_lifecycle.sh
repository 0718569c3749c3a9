#!/usr/bin/env bash
# The .deb from a build tree: built with CPack, inspected (dpkg-deb: contents, control fields,
# no RPATH/RUNPATH in its binaries), installed with dpkg -i, used (the demo against
# /usr/lib/kvcached/libkvcached_shim.so on the fake driver, `kvctl doctor`, a preloaded process),
# then purged: no file of it left, /etc/ld.so.preload byte-identical before and after.
#
# The real install needs root and a machine where kvcached-shim is not installed already (CI: a
# throwaway machine). Otherwise the same steps run on a private dpkg root (dpkg --root, a
# database of its own in a temporary folder), and the demo uses the library installed there.
# usage: deb_lifecycle.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
fake=$build/fakecuda/libcuda.so.1
tmp=$(mktemp -d /tmp/kvcached-deb-test.XXXXXX)
ipc=pkgdeb_$$
pkg=kvcached-shim
installed_here=""
root=""
cleanup() {
  if [ -n "$installed_here" ]; then dpkg --purge "$pkg" >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
  rm -f /dev/shm/kvcached_${ipc}*
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
for tool in cpack dpkg-deb dpkg readelf flock; do
  command -v "$tool" >/dev/null || fail "$tool not found (scripts/install-deps.sh installs it)"
done
# One dpkg test at a time on a machine (several build trees may run their suites at once).
exec 9>/tmp/kvcached-deb-test.lock
flock -w 600 9 || fail "another deb_lifecycle.sh held /tmp/kvcached-deb-test.lock for 10 minutes"

# --- build -------------------------------------------------------------------------------
t0=$(date +%s%N)
cpack --config "$build/CPackConfig.cmake" -G DEB -B "$tmp/out" >"$tmp/cpack.log" 2>&1 ||
  { cat "$tmp/cpack.log"; fail "cpack -G DEB"; }
deb=$(ls "$tmp"/out/${pkg}_*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || { cat "$tmp/cpack.log"; fail "cpack wrote no ${pkg}_*.deb"; }
echo "built $(basename "$deb") ($(stat -c %s "$deb") bytes) in $((($(date +%s%N) - t0) / 1000000)) ms"

# --- inspect -----------------------------------------------------------------------------
dpkg-deb --info "$deb" >"$tmp/info" || fail "dpkg-deb --info"
dpkg-deb --contents "$deb" | awk '{print $6}' | sed 's|^\./|/|; s|/$||' | grep . >"$tmp/contents"
for f in /usr/lib/kvcached/libkvcached_shim.so /usr/bin/kvctl /usr/include/kvcached/kvcached.h \
         /usr/lib/kvcached/kvcached_python/kvcached_hook/__init__.py \
         /usr/lib/kvcached/kvcached_python/kvcached_boot/sitecustomize.py \
         /usr/lib/cmake/kvcached/kvcachedConfig.cmake /usr/lib/pkgconfig/kvcached.pc \
         /usr/share/doc/kvcached/configuration.md; do
  grep -qx "$f" "$tmp/contents" || fail "the .deb lacks $f"
done
if grep -Ev '^/usr(/lib|/bin|/include|/share|/share/doc|/lib/cmake|/lib/pkgconfig)?$|^/usr/(lib/kvcached|include/kvcached|lib/cmake/kvcached|share/doc/kvcached)(/|$)|^/usr/bin/kvctl$|^/usr/lib/pkgconfig/kvcached.pc$' "$tmp/contents" | grep .; then
  fail "the .deb installs files outside its own folders (above)"
fi
grep -q 'ld.so.preload' "$tmp/contents" && fail "the .deb ships an ld.so.preload"
depends=$(dpkg-deb --field "$deb" Depends)
echo "Depends: $depends"
echo "$depends" | grep -q 'libc6' || fail "Depends lacks libc6 (dpkg-shlibdeps did not run?)"
if echo "$depends" | grep -Eiq 'cuda|nvidia'; then fail "Depends names the driver: $depends"; fi
[ "$(dpkg-deb --field "$deb" Package)" = "$pkg" ] || fail "Package is not $pkg"
dpkg-deb --control "$deb" "$tmp/control"
# CPack adds `ldconfig` to postinst/postrm for any library under /usr/lib (harmless: lib/kvcached
# is not on the loader's path); anything more would be a change worth a look.
for script in preinst postinst prerm postrm; do
  [ -e "$tmp/control/$script" ] || continue
  body=$(grep -Ev '^\s*(#|$|set -e|if \[ "\$1" = "(configure|remove)" \]; then|fi)' "$tmp/control/$script" | tr -d '\t ')
  [ "$body" = ldconfig ] || fail "the .deb's $script does more than ldconfig: $(cat "$tmp/control/$script")"
done
dpkg-deb -x "$deb" "$tmp/x"
while IFS= read -r f; do
  if [ "$(head -c4 "$f" | tail -c3)" = ELF ]; then
    if readelf -d "$f" 2>/dev/null | grep -Eq 'RPATH|RUNPATH'; then
      fail "${f#"$tmp"/x} carries $(readelf -d "$f" | grep -E 'RPATH|RUNPATH')"
    fi
  fi
done < <(find "$tmp/x" -type f)
if grep -rl --binary-files=text "$build" "$tmp/x/usr/lib/kvcached/libkvcached_shim.so" "$tmp/x/usr/bin/kvctl" >/dev/null; then
  echo "note: the binaries mention the build folder (debug strings); not an RPATH"
fi
echo "inspect: ok ($(grep -c . "$tmp/contents") entries, no RPATH/RUNPATH, maintainer scripts: ldconfig only)"

# --- install -----------------------------------------------------------------------------
preload_before=$(sha256sum /etc/ld.so.preload 2>/dev/null || echo absent)
if [ "$(id -u)" -eq 0 ] && ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q installed \
   && [ ! -e /usr/lib/kvcached ]; then
  mode=system; prefix=""
  for attempt in 1 2 3 4 5 6; do  # dpkg refuses while apt holds its lock: wait a little
    if dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1; then installed_here=1; break; fi
    grep -q 'lock' "$tmp/dpkg.log" || { cat "$tmp/dpkg.log"; fail "dpkg -i"; }
    sleep 10
  done
  [ -n "$installed_here" ] || { cat "$tmp/dpkg.log"; fail "dpkg -i (dpkg stayed locked)"; }
  dpkg-query -W -f='${Status}\n' "$pkg" | grep -q 'install ok installed' || fail "dpkg-query: not installed"
else
  # Not root, or the package is already installed on this machine (leave that one alone).
  mode="private dpkg root"; root=$tmp/root; prefix=$root
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
  touch "$root/var/lib/dpkg/status"
  dpkg --root="$root" --force-not-root --force-depends --force-script-chrootless \
    --log=/dev/null -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log"; fail "dpkg --root -i"; }
fi
echo "install: ok ($mode)"
lib=$prefix/usr/lib/kvcached/libkvcached_shim.so
kvctl=$prefix/usr/bin/kvctl

# --- use ---------------------------------------------------------------------------------
out=$(env LD_PRELOAD="$lib" /bin/true 2>&1) || fail "LD_PRELOAD=$lib /bin/true failed: $out"
[ -z "$out" ] || fail "LD_PRELOAD=$lib /bin/true printed: $out"
[ -f "$fake" ] || fail "no fake driver at $fake (build target fakecuda)"
export KVCACHED_CUDA_DRIVER=$fake KVCACHED_IPC_NAME=$ipc FAKECUDA_TOTAL_MB=16384
"$build/bin/kvcached_demo" "$lib" 4 >"$tmp/demo.log" 2>&1 || { cat "$tmp/demo.log"; fail "the demo against $lib"; }
# The demo dlopens exactly the path it is given; its last lines prove the run went through.
grep -q 'Physical memory followed the acquired ranges' "$tmp/demo.log" ||
  { cat "$tmp/demo.log"; fail "the demo against $lib did not finish its walk"; }
tail -n 3 "$tmp/demo.log" | sed 's/^/  demo: /'
# doctor looks for the shim next to itself (../lib/kvcached) and loads the fake driver. It also
# judges every segment in /dev/shm; on a shared machine other users' or other tests' broken
# segments are not this package's problem, so those (and only those) are reported, not failed.
env -u KVCACHED_SHIM_PATH "$kvctl" doctor >"$tmp/doctor.log" 2>&1 && doctor_rc=0 || doctor_rc=$?
env -u KVCACHED_SHIM_PATH "$kvctl" doctor --json >"$tmp/doctor.json" 2>/dev/null || true
python3 - "$tmp/doctor.json" "$lib" "$ipc" <<'PY' || { cat "$tmp/doctor.log"; fail "kvctl doctor (installed) found a problem of its own"; }
import json, os, re, sys
report, lib, ipc = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
checks = report["checks"]
shim = [c for c in checks if c["check"] == "shim" and c["status"] == "ok"]
m = re.match(r"(\S+) loads", shim[0]["detail"]) if shim else None
assert m and os.path.realpath(m.group(1)) == os.path.realpath(lib), f"shim check: {shim}"
assert any(c["check"] == "driver" and c["status"] == "ok" for c in checks), "driver check not ok"
foreign = []
for c in checks:
    if c["status"] != "fail":
        continue
    assert c["check"] in ("segments", "permissions") and ipc not in c["detail"], c
    foreign.append(c["detail"].split(":")[0])
if foreign:
    print(f"  doctor: also reports {len(foreign)} broken segment(s) of others in /dev/shm (not this package's): "
          + "; ".join(f[:80] for f in foreign))
PY
sed 's/^/  doctor: /' "$tmp/doctor.log" | grep -E '\] (shim|driver) |all checks|problems found'
echo "  doctor: exit status $doctor_rc (0 where /dev/shm holds no broken segment of others)"
if command -v python3 >/dev/null; then
  # The engine hook is found next to the installed library, and nothing is written beside it.
  env LD_PRELOAD="$lib" python3 -c 'import kvcached_hook, sys; print("  python: kvcached_hook from", kvcached_hook.__file__)' \
    >"$tmp/py.log" 2>&1 || { cat "$tmp/py.log"; fail "python3 under the installed shim"; }
  cat "$tmp/py.log"
  grep -q "$prefix/usr/lib/kvcached/kvcached_python" "$tmp/py.log" || fail "kvcached_hook was not loaded from the installed package"
fi

# --- remove ------------------------------------------------------------------------------
if [ "$mode" = system ]; then
  dpkg --purge "$pkg" >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log"; fail "dpkg --purge"; }
  installed_here=""
  grep -i 'warning' "$tmp/purge.log" && fail "dpkg --purge warned (files added after install?)"
  left=""
  while IFS= read -r f; do
    [ -z "$f" ] && continue
    case $f in /usr|/usr/lib|/usr/bin|/usr/include|/usr/share|/usr/share/doc|/usr/lib/cmake|/usr/lib/pkgconfig) continue ;; esac
    [ -e "$f" ] && left+=" $f"
  done <"$tmp/contents"
  [ -z "$left" ] || fail "left after dpkg --purge:$left"
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed' && fail "still registered after purge"
else
  dpkg --root="$root" --force-not-root --force-script-chrootless --log=/dev/null --purge "$pkg" \
    >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log"; fail "dpkg --root --purge"; }
  left=$(find "$root/usr" -mindepth 1 -not -type d | head) || true
  [ -z "$left" ] || fail "left after dpkg --purge: $left"
fi
preload_after=$(sha256sum /etc/ld.so.preload 2>/dev/null || echo absent)
[ "$preload_before" = "$preload_after" ] || fail "/etc/ld.so.preload changed: $preload_before -> $preload_after"
echo "remove: ok (no files left; /etc/ld.so.preload ${preload_after%% *} unchanged)"
