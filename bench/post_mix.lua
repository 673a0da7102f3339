-- wrk script: POST a mix of images to /v1/predict, each connection cycling
-- through all of them (starting at a different one per thread).
--
--   wrk -t2 -c8 -d15s --latency -s bench/post_mix.lua http://127.0.0.1:8080 -- A.jpg B.png C.jpg ...
--
-- Every argument after -- is an image file (.jpg/.jpeg or .png; the Content-Type
-- follows the extension).  done() prints the same "wrk-json {...}" line as
-- bench/post_image.lua.

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

local requests = {}
local next_one = 1
local thread_no = 0

function setup(thread)
   thread:set("thread_no", thread_no)
   thread_no = thread_no + 1
end

function init(args)
   if #args == 0 then error("post_mix.lua: give the image files after --") end
   for i, name in ipairs(args) do
      requests[i] = wrk.format("POST", "/v1/predict",
                               {["Content-Type"] = content_type(name)}, read_file(name))
   end
   next_one = (thread_no % #requests) + 1
end

function request()
   local r = requests[next_one]
   next_one = next_one % #requests + 1
   return r
end

function done(summary, latency, requests_)
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
