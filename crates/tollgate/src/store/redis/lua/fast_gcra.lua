-- fast_gcra.lua: the bucket helpers of fast_settle.lua, put in front of it when the scripts
-- are built (scripts.rs). Four small functions, so that an EVALSHA still builds almost nothing
-- before its own work. fast_decide.lua and fast_check.lua do the same inline (a function is a
-- closure built on every call). Same state format as algorithms.lua.
--
-- No KEYS or ARGV of its own: callers pass the key and the numbers.
--
-- GCRA state: the string "micros" (or "micros rem" when rem > 0), tat = micros * scale + rem in
-- scaled time.

local floor = math.floor

-- d = tat - now in scaled units for the GCRA bucket at `key` (0 when full or missing).
local function gcra_load(key, now, scale)
  local raw = redis.call('GET', key)
  if not raw then return 0 end
  local q, r = tonumber(raw), 0
  if not q then
    local x, y = string.match(raw, '^(%d+) (%d+)$')
    q, r = tonumber(x), tonumber(y)
  end
  if q and q >= now then return (q - now) * scale + r end
  return 0
end

-- Microseconds as whole milliseconds, rounded up (a TTL never ends early).
local function ms_ceil(us)
  local ms = floor(us / 1000)
  if ms * 1000 < us then ms = ms + 1 end
  return ms
end

-- Sets `key`'s expiry to `ttl_us` microseconds from now, plus `slack` (tests running on an
-- overridden time).
local function expire_after(key, ttl_us, slack)
  redis.call('PEXPIRE', key, ms_ceil(ttl_us) + slack)
end

-- Stores the GCRA bucket at `key` whose tat is now + d (scaled), with a TTL until it is full;
-- a full bucket is deleted.
local function gcra_store(key, now, d, scale, slack)
  -- Debt is capped at 2^62 scaled units (146,000 years at one unit a microsecond), where no
  -- cost can fit: uncapped, a thousand charges of the largest size pass 2^63, beyond which
  -- Redis turns a script's reply of d into a wrong integer (and string.format('%d') wraps).
  if d > 4611686018427387904 then d = 4611686018427387904 end
  local q, r = d, 0
  if scale ~= 1 then
    q = floor(d / scale)
    r = d - q * scale
    if r < 0 then q = q - 1; r = r + scale elseif r >= scale then q = q + 1; r = r - scale end
  end
  local ttl = q
  if r > 0 then ttl = q + 1 end
  if ttl <= 0 then
    redis.call('DEL', key)
    return
  end
  -- Numbers reach Redis as exact decimal integers (below 10^17), so no string.format.
  local v = now + q
  if r > 0 then v = string.format('%d %d', v, r) end
  redis.call('SET', key, v, 'PX', ms_ceil(ttl) + slack)
end
