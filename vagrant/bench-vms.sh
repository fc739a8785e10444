#!/usr/bin/env bash
# Kernel VXLAN vs twill between pods on different VMs of the Vagrant testbed
# (run on the host, in vagrant/, after `vagrant up`).
#
# What it is: the workloads of `make bench` (iperf3 TCP 1 and 4 streams,
# iperf3 64-byte UDP packets/s, sockperf UDP ping-pong round trip), run pod on
# twill1 -> pod on twill2 over the VMs' real NICs, for each mode, interleaved
# over --reps repetitions. It is not `make bench`: `make bench` builds
# namespaced clusters on one machine and also measures CPU per GB and the
# control plane; `--make-bench` runs that too, on twill1, and fetches its
# report. Between VMs the numbers include the hypervisor's virtual NICs and
# whatever else the host runs.
#
# Modes (as in bench/README.md): kernel-vxlan (the baseline of the ratios),
# twill-vxlan, twill-vxlan-fast, kernel-direct, twill-direct, underlay (VM to
# VM, no pods). A mode switch stops twill on every VM, runs `twill teardown`,
# rewrites flannel's config in etcd (DirectRouting) and /etc/default/twill,
# starts twill again and re-creates the two pods.
#
# Results: vagrant/results/<timestamp>/ on the host: samples.tsv (one line
# per sample), raw/ (each tool's output), summary.md (min/median/max per
# mode, ratio of medians to kernel-vxlan), make-bench/ with --make-bench.
# At the end (also on failure or Ctrl-C) the pods are removed and every VM
# is put back to the provisioned mode (bpf, no fast path, no DirectRouting).
#
# Usage: ./bench-vms.sh [--reps N] [--time SECONDS] [--modes a,b,...]
#                       [--make-bench [quick|full]] [--only-make-bench]
# Remote commands are single-quoted on purpose: they expand on the VM.
# shellcheck disable=SC2016
set -euo pipefail
cd "$(dirname "$0")"

reps=3 secs=10 modes="kernel-vxlan,twill-vxlan,twill-vxlan-fast,kernel-direct,twill-direct,underlay"
make_bench="" run_pods=1
while (($#)); do
  case $1 in
    --reps) reps=${2:?}; shift 2 ;;
    --time) secs=${2:?}; shift 2 ;;
    --modes) modes=${2:?}; shift 2 ;;
    --make-bench) make_bench=full; if [[ ${2:-} == quick || ${2:-} == full ]]; then make_bench=$2; shift; fi; shift ;;
    --only-make-bench) make_bench=${make_bench:-full}; run_pods=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-vms: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "bench-vms: --reps must be a positive integer, not '$reps'" >&2; exit 2; }
[[ $secs =~ ^[1-9][0-9]*$ ]] || { echo "bench-vms: --time must be a positive integer, not '$secs'" >&2; exit 2; }
IFS=, read -r -a mode_list <<<"$modes"
for m in "${mode_list[@]}"; do
  case $m in kernel-vxlan|twill-vxlan|twill-vxlan-fast|kernel-direct|twill-direct|underlay) ;;
    *) echo "bench-vms: unknown mode '$m' in --modes" >&2; exit 2 ;;
  esac
done

out="results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out/raw"
cfg="$out/ssh_config"
if ! vagrant ssh-config >"$cfg" 2>"$out/raw/ssh-config.err"; then
  cat "$out/raw/ssh-config.err" >&2
  echo "bench-vms: the VMs are not up (vagrant up first)" >&2
  exit 1
fi
# on VM COMMAND: runs COMMAND as root on the VM.
on() { local vm=$1; shift; ssh -F "$cfg" -o LogLevel=ERROR "$vm" -- sudo bash -c "$(printf '%q' "$*")"; }
VMS=(twill1 twill2 twill3)
ETCDCTL="ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379"
POD=/srv/twill/vagrant/provision/pod.sh
ip2=$(on twill2 '. /etc/default/twill; echo $TWILL_PUBLIC_IP')

# set_mode DATAPLANE FAST_PATH DIRECT_ROUTING: every VM's twill in that mode.
set_mode() {
  local dp=$1 fast=$2 direct=$3 vm
  for vm in "${VMS[@]}"; do
    on "$vm" "$POD del bench; systemctl stop twill; set -a; . /etc/default/twill; set +a; twill teardown >/dev/null"
  done
  on twill1 "$ETCDCTL put /coreos.com/network/config '{\"Network\":\"10.244.0.0/16\",\"SubnetLen\":24,\"Backend\":{\"Type\":\"vxlan\",\"VNI\":1,\"Port\":8472,\"DirectRouting\":$direct}}' >/dev/null"
  for vm in "${VMS[@]}"; do
    on "$vm" "sed -i -e 's/^TWILL_DATAPLANE=.*/TWILL_DATAPLANE=$dp/' -e 's/^TWILL_FAST_PATH=.*/TWILL_FAST_PATH=$fast/' /etc/default/twill && systemctl start twill"
  done
  for vm in "${VMS[@]}"; do
    on "$vm" 'for _ in $(seq 60); do curl -fsS http://127.0.0.1:10756/readyz >/dev/null 2>&1 && exit 0; sleep 1; done; journalctl -u twill -n 30 --no-pager >&2; exit 1' \
      || { echo "bench-vms: twill on $vm is not ready ($dp, fast path $fast, DirectRouting $direct)" >&2; return 1; }
  done
}

restore() {
  local rc=$?
  trap - EXIT INT TERM
  if ((run_pods)); then
    echo "bench-vms: removing the pods, back to the provisioned mode" >&2
    on twill2 'pkill -x iperf3; pkill -x sockperf; true' || true
    set_mode bpf false false || echo "bench-vms: could not restore every VM; see 'vagrant provision --provision-with twill'" >&2
  fi
  exit "$rc"
}
trap restore EXIT
trap 'exit 130' INT TERM

# measure MODE REP: one sample of every workload, appended to samples.tsv.
measure() {
  local mode=$1 rep=$2 cns="" sns="" dst=$ip2 raw="$out/raw/$1-rep$2" r
  if [[ $mode != underlay ]]; then
    cns="ip netns exec twpod-bench" sns="ip netns exec twpod-bench"
    dst=$pod2
  fi
  # TCP 1 and 4 streams; 64-byte UDP with no rate limit. The server takes
  # one client (-1) and exits; `setsid -f` returns at once.
  for w in tcp1:"-P 1" tcp4:"-P 4" udp64:"-u -l 64 -b 0"; do
    on twill2 "$sns setsid -f iperf3 -s -1 >/dev/null 2>&1; sleep 1"
    on twill1 "$cns iperf3 -c $dst -t $secs -J ${w#*:}" >"$raw-${w%%:*}.json"
    r=$(on twill1 "node -e '
      const j = JSON.parse(require(\"fs\").readFileSync(0, \"utf8\"));
      if (j.error) { console.error(j.error); process.exit(1); }
      const s = j.end.sum_received ?? j.end.sum;
      console.log(\"$w\".startsWith(\"udp\")
        ? ((s.packets - s.lost_packets) / s.seconds).toFixed(0)
        : (s.bits_per_second / 1e9).toFixed(3));'" <"$raw-${w%%:*}.json")
    case ${w%%:*} in
      tcp1) printf '%s\t%s\t%s\t%s\n' "$rep" "$mode" "tcp_1_stream_gbps" "$r" ;;
      tcp4) printf '%s\t%s\t%s\t%s\n' "$rep" "$mode" "tcp_4_streams_gbps" "$r" ;;
      udp64) printf '%s\t%s\t%s\t%s\n' "$rep" "$mode" "udp64_rx_pps" "$r" ;;
    esac >>"$out/samples.tsv"
  done
  # Round trip, UDP 64 B.
  on twill2 "$sns setsid -f timeout $((secs + 20)) sockperf server -i $dst -p 11111 >/dev/null 2>&1; sleep 1"
  on twill1 "$cns sockperf ping-pong -i $dst -p 11111 -m 64 -t $secs --full-rtt" >"$raw-rtt.txt" 2>&1
  on twill2 'pkill -x sockperf; true'
  awk -v rep="$rep" -v mode="$mode" '
    /---> percentile 50.000 =/ { printf "%s\t%s\trtt_p50_us\t%s\n", rep, mode, $NF }
    /---> percentile 99.000 =/ { printf "%s\t%s\trtt_p99_us\t%s\n", rep, mode, $NF }
  ' "$raw-rtt.txt" >>"$out/samples.tsv"
  grep -q "percentile 50.000" "$raw-rtt.txt" || { echo "bench-vms: sockperf gave no percentiles ($raw-rtt.txt)" >&2; return 1; }
}

summarize() {
  {
    echo "# Pod to pod across VMs: twill1 -> twill2"
    echo
    echo "$reps repetitions x ${secs} s, modes interleaved; min / median / max;"
    echo "ratio = median / median of kernel-vxlan. Raw outputs in raw/, samples in samples.tsv."
    echo "Kernels: $(on twill1 'uname -r') (twill1), $(on twill2 'uname -r') (twill2)."
    echo
    echo "| metric | mode | min | median | max | ratio |"
    echo "|---|---|---|---|---|---|"
    sort -t $'\t' -k3,3 -k2,2 -k4,4g "$out/samples.tsv" | awk -F'\t' '
      function flush() {
        if (n == 0) return
        med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        rows[++nr] = metric "\t" mode "\t" v[1] "\t" med "\t" v[n]
        if (mode == "kernel-vxlan") base[metric] = med
        n = 0
      }
      { if ($3 != metric || $2 != mode) { flush(); metric = $3; mode = $2 } v[++n] = $4 }
      END {
        flush()
        for (i = 1; i <= nr; i++) {
          split(rows[i], f, "\t")
          ratio = (f[1] in base && base[f[1]] > 0) ? sprintf("%.2f", f[4] / base[f[1]]) : "-"
          printf "| %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], f[4], f[5], ratio
        }
      }'
  } >"$out/summary.md"
}

mode_args() { # MODE -> "DATAPLANE FAST DIRECT" (underlay: anything; no pods)
  case $1 in
    kernel-vxlan) echo "kernel false false" ;;
    twill-vxlan) echo "bpf false false" ;;
    twill-vxlan-fast) echo "bpf true false" ;;
    kernel-direct) echo "kernel false true" ;;
    twill-direct) echo "bpf true true" ;;
    underlay) echo "" ;;
  esac
}

if ((run_pods)); then
  printf 'rep\tmode\tmetric\tvalue\n' >"$out/samples.tsv"
  for ((rep = 1; rep <= reps; rep++)); do
    # rotate the order every repetition, as make bench does
    n=${#mode_list[@]}
    for ((k = 0; k < n; k++)); do
      mode=${mode_list[$(((k + rep - 1) % n))]}
      echo "bench-vms: rep $rep/$reps, $mode" >&2
      read -r dp fast direct <<<"$(mode_args "$mode")"
      if [[ $mode != underlay ]]; then
        set_mode "$dp" "$fast" "$direct"
        on twill1 "$POD add bench" >/dev/null
        pod2=$(on twill2 "$POD add bench")
        on twill1 "ip netns exec twpod-bench ping -c 3 -W 2 -q $pod2" >/dev/null \
          || { echo "bench-vms: pod on twill1 cannot reach pod $pod2 on twill2 ($mode)" >&2; exit 1; }
      fi
      measure "$mode" "$rep"
    done
  done
  sed -i 1d "$out/samples.tsv" && summarize && sed -i '1i rep\tmode\tmetric\tvalue' "$out/samples.tsv"
  echo "bench-vms: $out/summary.md" >&2
fi

if [[ -n $make_bench ]]; then
  echo "bench-vms: make bench ($make_bench) on twill1 (one machine, namespaced clusters)" >&2
  target=bench; [[ $make_bench == quick ]] && target=bench-quick
  on twill1 "make -C /srv/twill $target"
  mkdir -p "$out/make-bench"
  on twill1 'tar -C "$(readlink -f /srv/twill/bench/results/latest)" -c .' | tar -C "$out/make-bench" -x
  echo "bench-vms: $out/make-bench/report.md" >&2
fi
