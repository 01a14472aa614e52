#!/usr/bin/env bash
# Make a fresh Debian 12 machine ready for faxgate: system packages, a virtualenv
# in .venv and an editable install with the test extras. Idempotent: when
# everything is present it only checks and returns within seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  postfix            # the MTA the milter plugs into; tests run a private instance
  libmilter-dev      # pymilter compiles against libmilter
  libspandsp2        # the far-end fax machine and T.31 modem of the simulated line
  libspandsp-dev     # its headers (reference for the ctypes bindings)
  libreoffice-core libreoffice-writer libreoffice-calc libreoffice-impress  # Office -> PDF
  fonts-noto-cjk     # Chinese text on pages, headers, cover pages
  ghostscript efax   # baselines for benchmarks, efax also cross-checks the line
  libtiff-tools      # fax2tiff/tiffinfo: independent T.4 decoder in tests
  poppler-utils      # pdftoppm/pdfinfo for inspecting generated PDFs
  sqlite3            # the store stays readable with stock tools
  python3 python3-venv  # Debian 12's Python 3.11; venv needs ensurepip from python3-venv
  gcc python3-dev    # building pymilter
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # postfix asks questions on install; answer them up front: no system mail service.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: faxgate needs Python >= 3.11, $PY is $("$PY" --version 2>&1)" >&2
  exit 1
fi
stamp=.venv/.faxgate-installed
# A venv whose creation failed half-way (no ensurepip) has a python but no pip: redo it.
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/pip ]; then
  "$PY" -m venv --clear .venv
  rm -f "$stamp"
fi
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c 'import faxgate' 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
echo "bootstrap: ready (.venv)"
