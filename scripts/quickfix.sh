#!/usr/bin/env bash
# Builds what the FIX tests use as the broker (tests/fix_quickfix.rs): the QuickFIX engine
# (Debian's libquickfix-dev, the C++ library), the test initiator tests/fix/initiator.cpp on
# it, and QuickFIX's FIX 4.4 data dictionary (spec/FIX44.xml of the quickfix package on PyPI,
# which Debian's package leaves out). Everything lands in target/quickfix/.
#
# Installs libquickfix-dev and g++ when they are missing (root only), and fails saying why
# when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/quickfix
# The quickfix release whose data dictionary the tests validate against.
QUICKFIX_VERSION=1.16.0
mkdir -p "$out"

if [ ! -e /usr/include/quickfix/Application.h ] || ! command -v g++ >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/quickfix.sh: libquickfix-dev or g++ is missing, and only root can install them (apt-get install libquickfix-dev g++)" >&2
    exit 1
  fi
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libquickfix-dev g++; } >"$out/apt.log" 2>&1; then
    cat "$out/apt.log" >&2
    echo "scripts/quickfix.sh: could not install libquickfix-dev and g++ (above): the FIX tests need them" >&2
    exit 1
  fi
fi

if [ ! -s "$out/FIX44.xml" ]; then
  pip=(pip3)
  command -v pip3 >/dev/null 2>&1 || pip=(python3 -m pip)
  rm -rf "$out/sdist"
  if ! "${pip[@]}" download --quiet --no-deps --no-binary :all: -d "$out/sdist" "quickfix==$QUICKFIX_VERSION" >"$out/pip.log" 2>&1; then
    cat "$out/pip.log" >&2
    echo "scripts/quickfix.sh: could not download quickfix $QUICKFIX_VERSION from PyPI (above) for its FIX44.xml" >&2
    exit 1
  fi
  tar -xzf "$out/sdist/quickfix-$QUICKFIX_VERSION.tar.gz" -C "$out/sdist" \
    "quickfix-$QUICKFIX_VERSION/spec/FIX44.xml" "quickfix-$QUICKFIX_VERSION/LICENSE"
  cp "$out/sdist/quickfix-$QUICKFIX_VERSION/spec/FIX44.xml" "$out/FIX44.xml"
  cp "$out/sdist/quickfix-$QUICKFIX_VERSION/LICENSE" "$out/QUICKFIX-LICENSE"
fi

if [ ! -x "$out/initiator" ] || [ tests/fix/initiator.cpp -nt "$out/initiator" ]; then
  # Debian's QuickFIX 1.15 headers declare exception specifications, which C++17 removed;
  # its library is built with OpenSSL (HAVE_SSL), which the SSL initiator's header asks for.
  g++ -O1 -std=c++14 -Wno-deprecated -DHAVE_SSL=1 -o "$out/initiator" tests/fix/initiator.cpp \
    -lquickfix -lssl -lcrypto -lpthread
fi
echo "QuickFIX ready: $out/initiator, $out/FIX44.xml"
