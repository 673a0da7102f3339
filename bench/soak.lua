-- wrk script of bench/soak.sh: every request picks its payload at random, by
-- weight, and every answer's status is counted.
--
--   wrk -t2 -c32 -d600s -s bench/soak.lua http://127.0.0.1:PORT -- W:KIND:CTYPE:FILE ...
--
-- Each argument is weight:kind:content-type:file (kind is a label: valid,
-- corrupt, huge_header, big_body).  done() prints one line
--   soak-json {"requests":N,"sent":{kind:n,...},"status":{"200":n,...},"errors":{...},...}
-- where sent counts the requests started per kind and status the answers
-- received per HTTP status, over all threads.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_common.lua")

local payloads = {}   -- {weight, kind, request}
local total_weight = 0
local threads = {}
sent = {}     -- per kind; globals, so that done() can read them with thread:get
status = {}   -- per HTTP status

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   if #args == 0 then error("soak.lua: give weight:kind:ctype:file arguments after --") end
   for _, a in ipairs(args) do
      local w, kind, ctype, file = string.match(a, "^(%d+):([%w_]+):([^:]+):(.+)$")
      if not w then error("soak.lua: bad argument " .. a) end
      total_weight = total_weight + tonumber(w)
      table.insert(payloads, {total_weight, kind,
                              wrk.format("POST", "/v1/predict", {["Content-Type"] = ctype},
                                         common.read_file(file))})
      sent[kind] = 0
   end
   math.randomseed(os.time() * 1000 + id)
end

function request()
   local x = math.random() * total_weight
   for _, p in ipairs(payloads) do
      if x < p[1] then
         sent[p[2]] = sent[p[2]] + 1
         return p[3]
      end
   end
   local p = payloads[#payloads]
   sent[p[2]] = sent[p[2]] + 1
   return p[3]
end

function response(code, headers, body)
   local k = tostring(code)
   status[k] = (status[k] or 0) + 1
end

local function merge(into, t)
   for k, v in pairs(t) do into[k] = (into[k] or 0) + v end
end

local function json_object(t)
   local parts = {}
   for k, v in pairs(t) do table.insert(parts, string.format('"%s":%d', k, v)) end
   table.sort(parts)
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests_)
   local all_sent, all_status = {}, {}
   for _, t in ipairs(threads) do
      merge(all_sent, t:get("sent"))
      merge(all_status, t:get("status"))
   end
   local e = summary.errors
   io.write(string.format(
      'soak-json {"requests":%d,"seconds":%.3f,"rps":%.2f,"p50_ms":%.3f,"p99_ms":%.3f,' ..
      '"max_ms":%.3f,"sent":%s,"status":%s,"errors":{"connect":%d,"read":%d,"write":%d,' ..
      '"timeout":%d,"status":%d}}\n',
      summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
      json_object(all_sent), json_object(all_status),
      e.connect, e.read, e.write, e.timeout, e.status))
end
