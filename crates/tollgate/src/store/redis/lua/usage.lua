-- usage.lua: how much of each bucket is in use, spending nothing.
--
-- KEYS[1..n]   the buckets
-- ARGV[1]      the time in microseconds to use instead of TIME ("" in production)
-- ARGV[2]      n
-- ARGV[3+4*(i-1) .. 6+4*(i-1)]   op i: algorithm, p1, p2, p3
--
-- Returns { now_us, then per bucket: used, capacity, available, reset_after_us }.

local now = now_us(ARGV[1])
local n = tonumber(ARGV[2])
local reply = { now }
for i = 1, n do
  local b = 3 + 4 * (i - 1)
  local alg = ALGORITHMS[tonumber(ARGV[b])]
  local p = { tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]) }
  local u = alg.usage(alg.load(KEYS[i], p, now), p, now)
  for j = 1, 4 do reply[#reply + 1] = u[j] end
end
return reply
