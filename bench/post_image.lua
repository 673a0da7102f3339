-- wrk script: POST one image file to /v1/predict, again and again.
--
--   wrk -t2 -c8 -d15s --latency -s bench/post_image.lua http://127.0.0.1:8080 -- IMAGE [PATH]
--
-- IMAGE: a .jpg/.jpeg or .png file (its Content-Type follows the extension);
-- PATH: the URL path, default /v1/predict.
-- done() prints one line "wrk-json {...}" (requests/s, latency percentiles in ms,
-- non-2xx answers and socket errors) that bench/loadtest.sh and
-- tests/sh/test_deploy.sh read.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

function init(args)
   local name = args[1] or error("post_image.lua: give the image file after --")
   wrk.method = "POST"
   wrk.path = args[2] or "/v1/predict"
   wrk.body = common.read_file(name)
   wrk.headers["Content-Type"] = common.content_type(name)
end

function done(summary, latency, requests)
   common.report(summary, latency)
end
