#!/usr/bin/env bash
# etcd on the first VM (Debian's etcd-server, installed by build.sh through
# DEB_PKGS), serving clients on the private network, with flannel's network
# config at /coreos.com/network/config. Plain HTTP: this is a lab network
# between the testbed's VMs only (twill's TLS flags are tested elsewhere).
# Usage: etcd.sh <this VM's private IP>
set -euo pipefail
ip="${1:?usage: etcd.sh <private IP>}"
cat > /etc/default/etcd <<CONF
# written by vagrant/provision/etcd.sh
ETCD_NAME=$(hostname)
ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379,http://$ip:2379
ETCD_ADVERTISE_CLIENT_URLS=http://$ip:2379
CONF
systemctl enable etcd
systemctl restart etcd
for _ in $(seq 60); do
  ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health >/dev/null 2>&1 && break
  sleep 1
done
ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health
# The config flannel's vxlan backend reads; vagrant/bench-vms.sh rewrites it
# (DirectRouting on/off) between benchmark modes.
ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 put /coreos.com/network/config \
  '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}'
echo "etcd: serving http://$ip:2379"
