// One copy, shared with the benchmark (which imports nothing from test/).
export * from "../../bench/lib/etcd.js";
