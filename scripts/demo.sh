#!/usr/bin/env bash
# The one-command demo: install what is needed, then run `faxgate demo`, which
# sends one real fax mail through a private Postfix, the milter, faxd and two
# simulated phone lines. Extra arguments go to `faxgate demo` (e.g. --workdir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  # apt-get and the private Postfix instance both need root.
  exec sudo -E bash "$0" "$@"
fi
bash scripts/bootstrap.sh
exec .venv/bin/faxgate demo "$@"
