-- fast_settle.lua: adjustments to earlier decisions in one slot, when every item is a GCRA
-- refund or charge or a concurrency release or renewal (and no request is being rolled back).
-- A standalone script, like fast_decide.lua, with fast_gcra.lua in front of it.
--
-- KEYS[1..n]   the buckets
-- ARGV[1]      the signature: "-", or "t" when the last argument is the time override (tests),
--              then one letter per item:
--                "r" GCRA refund, "a" GCRA charge, "x" release, "w" renewal
-- ARGV[2..]    the items' parameters, in order:
--                "r": scale, dec (= cost * step)     "a": scale, inc (= cost * step)
--                "x": lease id                        "w": lease id, lease_us
--
-- A release removes the lease and leaves the key's TTL as it was: it was set to the latest
-- expiry in the set, which a release can only lower, and Redis deletes an emptied set.
--
-- Returns one integer per item: 1 for a release or renewal that found its lease, else 0. The
-- store may send the items of several settlements in one call (see mod.rs, `SettleBatcher`).

local byte = string.byte
local sig = ARGV[1]
local now, slack
if byte(sig, 1) == 45 then -- -
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
  slack = 0
else
  now = tonumber(ARGV[#ARGV])
  slack = 3600000
end
local found = {}
local a = 2
for i = 1, #KEYS do
  local k, key = byte(sig, i + 1), KEYS[i]
  found[i] = 0
  if k == 120 then -- x
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    found[i] = redis.call('ZREM', key, ARGV[a])
    a = a + 1
  elseif k == 119 then -- w
    local lease = ARGV[a]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local exp = redis.call('ZSCORE', key, lease)
    if exp and tonumber(exp) > now then
      redis.call('ZADD', key, 'XX', now + tonumber(ARGV[a + 1]), lease)
      local last = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
      expire_after(key, last - now, slack)
      found[i] = 1
    end
    a = a + 2
  else -- r, a
    local scale = tonumber(ARGV[a])
    local d = gcra_load(key, now, scale)
    if k == 114 then -- r
      d = d - tonumber(ARGV[a + 1])
      if d < 0 then d = 0 end
    else
      d = d + tonumber(ARGV[a + 1])
    end
    a = a + 2
    gcra_store(key, now, d, scale, slack)
  end
end
return found
