-- wrk script: POST one prepared body, again and again, with the given headers.
--
--   wrk -t2 -c16 -d10s --latency -s bench/post_body.lua http://127.0.0.1:8080 -- PATH BODY_FILE [Name: value]...
--
-- bench/protocol.py writes the bodies (a /v1 image, Open Inference Protocol
-- JSON and binary requests).  done() prints one line "wrk-json {...}" with
-- requests/s, latency percentiles in ms, non-2xx answers and socket errors.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

function init(args)
   wrk.method = "POST"
   wrk.path = args[1] or error("post_body.lua: give PATH BODY_FILE after --")
   wrk.body = common.read_file(args[2] or error("post_body.lua: give the body file"))
   for i = 3, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      if not name then error("post_body.lua: header '" .. args[i] .. "' is not 'Name: value'") end
      wrk.headers[name] = value
   end
end

function done(summary, latency, requests)
   common.report(summary, latency)
end
