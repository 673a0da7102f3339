-- wrk_common.lua -- what the wrk scripts of bench/ share: reading a file, the
-- Content-Type of an image file, and the one-line report of a run.  A script
-- loads it from its own folder:
--   local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")
local M = {}

function M.read_file(name)
   local f = assert(io.open(name, "rb"), "cannot open " .. name)
   local data = f:read("*a")
   f:close()
   return data
end

-- image/png, image/jpeg from the extension; anything else application/octet-stream
function M.content_type(name)
   local ext = string.lower(string.match(name, "%.(%w+)$") or "")
   if ext == "png" then return "image/png" end
   if ext == "jpg" or ext == "jpeg" then return "image/jpeg" end
   return "application/octet-stream"
end

-- done(): one line "wrk-json {...}": requests/s, latency percentiles in ms,
-- non-2xx answers and socket errors (bench/loadtest.sh, bench/protocol.py,
-- tests/sh/test_deploy.sh and tests/docker/ read it)
function M.report(summary, latency)
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

return M
