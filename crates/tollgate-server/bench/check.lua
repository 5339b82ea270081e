-- wrk script: POST /v1/check for 1,000 tenants, each request formatted on every call
-- (the script of BENCHMARKS.md's service figures).
--   wrk -t1 -c32 -d10s --latency -s check.lua http://127.0.0.1:18480
local n = 0
request = function()
  n = n + 1
  local body = '{"subject":{"tenant":"bench-' .. (n % 1000) .. '","provider":"bench"}}'
  return wrk.format("POST", "/v1/check", {["Content-Type"] = "application/json"}, body)
end
