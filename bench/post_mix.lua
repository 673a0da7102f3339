-- wrk script: POST a mix of images to /v1/predict, each connection cycling
-- through all of them (starting at a different one per thread).
--
--   wrk -t2 -c8 -d15s --latency -s bench/post_mix.lua http://127.0.0.1:8080 -- A.jpg B.png C.jpg ...
--
-- Every argument after -- is an image file (.jpg/.jpeg or .png; the Content-Type
-- follows the extension).  done() prints the same "wrk-json {...}" line as
-- bench/post_image.lua.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

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
                               {["Content-Type"] = common.content_type(name)}, common.read_file(name))
   end
   next_one = (thread_no % #requests) + 1
end

function request()
   local r = requests[next_one]
   next_one = next_one % #requests + 1
   return r
end

function done(summary, latency, requests_)
   common.report(summary, latency)
end
