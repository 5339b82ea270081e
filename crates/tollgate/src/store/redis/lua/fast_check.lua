-- fast_check.lua: the commonest decision, one GCRA bucket with scale 1 (the emission interval
-- a whole number of microseconds) that spends if it admits, with no request id. The same
-- decision as fast_decide.lua with the signature "sg", in as little Lua as it takes: no
-- signature, no loop, no tables but the reply. A standalone script (no prelude). Same state
-- format as algorithms.lua.
--
-- KEYS[1]   the bucket
-- ARGV[1]   inc = cost * step (or tau + 1 when the cost exceeds the burst; see algorithms.lua)
-- ARGV[2]   tau = burst * step
-- ARGV[3]   (tests only) the time in microseconds to use instead of TIME
--
-- Returns the string "now_us d" when it admitted and spent, "now_us -(1 + d)" when it denied,
-- where d = tat - now (microseconds, >= 0) before this decision. A string, not the array
-- { now_us, d }: Redis turns a Lua table into a reply by first looking up each special field
-- (err, ok, double, map, set, ...) and then writing an array of deferred length, which costs
-- more than formatting two integers (docs/bench-redis.md).

local call = redis.call
local now, slack
if ARGV[3] then
  -- Tests only: TTLs run on the server's real clock, which does not follow the override.
  now = tonumber(ARGV[3])
  slack = 3600000
else
  local t = call('TIME')
  now = t[1] * 1000000 + t[2]
  slack = 0
end
local key = KEYS[1]
local d = 0
local raw = call('GET', key)
if raw then
  local q, r = tonumber(raw), 0
  if not q then
    local x, y = string.match(raw, '^(%d+) (%d+)$')
    q, r = tonumber(x), tonumber(y)
  end
  if q and q >= now then d = q - now + r end
end
local nd = d + ARGV[1]
if nd > tonumber(ARGV[2]) then return string.format('%d %d', now, -1 - d) end
if nd > 0 then
  -- TTL: until the bucket is full again, in whole milliseconds rounded up. Numbers reach
  -- Redis as exact decimal integers (below 10^17), so no string.format.
  local ms = nd + 999
  call('SET', key, now + nd, 'PX', (ms - ms % 1000) / 1000 + slack)
else
  call('DEL', key)
end
return string.format('%d %d', now, d)
