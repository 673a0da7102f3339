-- wrk script: POST one prepared body to /v1/predict, again and again.
--
--   wrk -t2 -c4 -d30s -s tests/docker/post_body.lua http://127.0.0.1:8080 -- BODY CONTENT-TYPE
--
-- tests/docker/test_swarm.sh posts the multipart body of make_slow_body.py with it.
-- done() prints the "wrk-json {...}" line of bench/post_image.lua, which
-- tests/docker/analyze.py reads.

function init(args)
   local f = assert(io.open(args[1] or error("post_body.lua: give the body file after --"), "rb"))
   wrk.body = f:read("*a")
   f:close()
   wrk.method = "POST"
   wrk.path = "/v1/predict"
   wrk.headers["Content-Type"] = args[2] or "application/octet-stream"
end

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      'wrk-json {"requests":%d,"seconds":%.3f,"rps":%.2f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
      '"p99_ms":%.3f,"max_ms":%.3f,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000,
      e.status, e.connect, e.read, e.write, e.timeout))
end
