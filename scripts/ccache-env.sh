# Sourced by the build scripts: compile through ccache when it is installed, with one cache for
# every build tree of this checkout (build/, build-deb/, build-asan/, ...), so CI's later trees and
# later runs reuse the objects of the earlier ones. Override with CCACHE_DIR.
if command -v ccache >/dev/null 2>&1 && [[ -z ${CMAKE_CXX_COMPILER_LAUNCHER:-} ]]; then
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/pasyn-ccache}
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
fi
