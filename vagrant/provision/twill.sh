#!/usr/bin/env bash
# twill as a systemd service on every VM, configured the flanneld way (its
# FLANNELD_* / TWILL_* variables in /etc/default/twill): leases from etcd on
# the first VM, the underlay chosen by this VM's private address (whatever
# the provider names the NIC), flannel's masquerade rules, /healthz /readyz
# /metrics on :10756, the bpf dataplane. Waits until the node is ready.
# Usage: twill.sh <node name> <private IP> <etcd URL>
set -euo pipefail
name="${1:?usage: twill.sh <node name> <private IP> <etcd URL>}"
ip="${2:?usage: twill.sh <node name> <private IP> <etcd URL>}"
etcd="${3:?usage: twill.sh <node name> <private IP> <etcd URL>}"

cat > /etc/default/twill <<CONF
# written by vagrant/provision/twill.sh; vagrant/bench-vms.sh edits
# TWILL_DATAPLANE and TWILL_FAST_PATH between benchmark modes
NODE_NAME=$name
TWILL_PUBLIC_IP=$ip
FLANNELD_ETCD_ENDPOINTS=$etcd
FLANNELD_IFACE=$ip
FLANNELD_IP_MASQ=true
FLANNELD_HEALTHZ_PORT=10756
TWILL_DATAPLANE=bpf
TWILL_FAST_PATH=false
CONF

cat > /etc/systemd/system/twill.service <<'UNIT'
[Unit]
Description=twill overlay dataplane (flanneld vxlan compatible)
Documentation=file:///srv/twill/README.md
Wants=network-online.target
After=network-online.target etcd.service

[Service]
EnvironmentFile=/etc/default/twill
ExecStart=/usr/local/bin/twill
# SIGTERM leaves the dataplane forwarding; `twill teardown` removes it.
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT

# With libvirt the VMs come up in parallel: wait for etcd on the first one.
for _ in $(seq 300); do curl -fsS "$etcd/health" >/dev/null 2>&1 && break; sleep 2; done
curl -fsS "$etcd/health" >/dev/null || { echo "twill: etcd at $etcd is not reachable" >&2; exit 1; }

systemctl daemon-reload
systemctl enable twill
systemctl restart twill
for _ in $(seq 60); do
  curl -fsS http://127.0.0.1:10756/readyz >/dev/null 2>&1 && break
  sleep 1
done
if ! curl -fsS http://127.0.0.1:10756/readyz >/dev/null; then
  journalctl -u twill --no-pager -n 50 >&2
  echo "twill: not ready after 60 s" >&2
  exit 1
fi
echo "twill: $name ready"
cat /run/flannel/subnet.env
