-- wrk script: POST /v1/check for 1,000 tenants, the same requests as check.lua, but formatted
-- once per wrk thread in `init` and then cycled through, so that wrk spends its CPU sending
-- rather than building strings in Lua. The server sees the same bytes as with check.lua.
--   wrk -t1 -c32 -d10s --latency -s check-prebuilt.lua http://127.0.0.1:18480
local requests = {}
local count = 1000
local n = 0

init = function(args)
  for i = 0, count - 1 do
    local body = '{"subject":{"tenant":"bench-' .. i .. '","provider":"bench"}}'
    requests[i + 1] = wrk.format("POST", "/v1/check", {["Content-Type"] = "application/json"}, body)
  end
end

request = function()
  n = n + 1
  if n > count then n = 1 end
  return requests[n]
end
