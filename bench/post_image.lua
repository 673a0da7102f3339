-- wrk script: POST one image file to /v1/predict, again and again.
--
--   wrk -t2 -c8 -d15s --latency -s bench/post_image.lua http://127.0.0.1:8080 -- IMAGE [PATH]
--
-- IMAGE: a .jpg/.jpeg or .png file (its Content-Type follows the extension);
-- PATH: the URL path, default /v1/predict.
-- done() prints one line "wrk-json {...}" (requests/s, latency percentiles in ms,
-- non-2xx answers and socket errors) that bench/loadtest.sh and
-- tests/sh/test_deploy.sh read.

local function content_type(name)
   local ext = string.lower(string.match(name, "%.(%w+)$") or "")
   if ext == "png" then return "image/png" end
   if ext == "jpg" or ext == "jpeg" then return "image/jpeg" end
   return "application/octet-stream"
end

local function read_file(name)
   local f = assert(io.open(name, "rb"), "cannot open " .. name)
   local data = f:read("*a")
   f:close()
   return data
end

function init(args)
   local name = args[1] or error("post_image.lua: give the image file after --")
   wrk.method = "POST"
   wrk.path = args[2] or "/v1/predict"
   wrk.body = read_file(name)
   wrk.headers["Content-Type"] = content_type(name)
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
