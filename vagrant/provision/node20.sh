#!/usr/bin/env bash
# Node.js >= 20 for twill (Debian 12's nodejs is 18): NodeSource's apt
# repository for the 20.x line, as on the development machines. Does nothing
# when a new enough node is already installed.
set -euo pipefail
if command -v node >/dev/null && node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
  echo "node20: $(node --version) already installed"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates curl gnupg
install -d -m 0755 /etc/apt/keyrings
curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key \
  | gpg --dearmor --yes -o /etc/apt/keyrings/nodesource.gpg
echo "deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_20.x nodistro main" \
  > /etc/apt/sources.list.d/nodesource.list
apt-get update -q
apt-get install -y -q --no-install-recommends nodejs
echo "node20: installed $(node --version)"
