-- wrk script for the linktrack benchmark.
--
-- The target URL names the tracking domain, so wrk sends it as TLS SNI
-- (Caddy picks its certificate and connection policy by SNI), but every
-- connection goes to 127.0.0.1: resolve() below replaces the DNS lookup.
wrk.resolve = function(host, service)
   wrk.addrs = wrk.lookup("127.0.0.1", service)
end

-- done() prints one machine-readable line for bench/wrk.go.
-- Latencies are in microseconds.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
      summary.requests, summary.duration,
      math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
      e.connect, e.read, e.write, e.status, e.timeout))
end
