-- fast_check.lua: the commonest decision, one GCRA bucket with scale 1 (the emission interval
-- a whole number of microseconds) that spends if it admits, with no request id. The same
-- decision as fast_decide.lua with the signature "sg", in as little Lua as it takes: no
-- signature, no loop, no tables but the reply. A standalone script (no prelude). Same state
-- format as algorithms.lua.
--
-- KEYS[1]   the bucket
-- ARGV[1]   inc = cost * step (or tau + 1 when the cost exceeds the burst; see algorithms.lua),
--           in hexadecimal
-- ARGV[2]   tau = burst * step, in hexadecimal
-- ARGV[3]   (tests only) the time in microseconds to use instead of TIME
--
-- Returns the integer d when it admitted and spent, -(1 + d) when it denied, where
-- d = tat - now (microseconds, >= 0) before this decision. Only d: the verdict depends on
-- nothing else, and an integer is the cheapest reply (the string "now d" of string.format
-- cost Redis more, a table more still). The store calls this script only for decisions that
-- no permit follows (lease 0), so nothing needs the server's time from it; a reservation goes
-- through fast_decide.lua, which returns it (mod.rs, `check_fast`).
--
-- What Redis spends on one call, by callgrind (docs/bench-redis.md): about 53,200
-- instructions, against 54,400 for crates/tollgate-bench/lua/min_gcra.lua and 60,100 for this
-- script's earlier form (reply "now d", numbers passed to SET as Lua numbers, decimal ARGV).

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
-- Hexadecimal, because tonumber(x, 16) parses with strtoul where a decimal string goes through
-- strtod, which costs Redis about 400 instructions more a number (callgrind). The same
-- number either way: both round an integer above 2^53 to the nearest double.
local nd = d + tonumber(ARGV[1], 16)
if nd > tonumber(ARGV[2], 16) then return -1 - d end
if nd > 0 then
  -- TTL: until the bucket is full again, in whole milliseconds rounded up. Both numbers go
  -- as strings made by string.format('%d'): Redis 7.0 turns a Lua number argument into a
  -- string with snprintf("%.17g"), which costs it more (about 900 instructions a number, by
  -- callgrind; docs/bench-redis.md).
  local ms = nd + 999
  local format = string.format
  call('SET', key, format('%d', now + nd), 'PX', format('%d', (ms - ms % 1000) / 1000 + slack))
else
  call('DEL', key)
end
return d
