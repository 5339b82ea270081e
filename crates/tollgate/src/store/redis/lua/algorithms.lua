-- algorithms.lua: tollgate-core's algorithms in Redis Lua (Lua 5.1: every number is a double).
--
-- No KEYS or ARGV of its own: the entry scripts (decide.lua, settle.lua, usage.lua) are appended
-- to this file and call these functions with their KEYS[i] and the op's parameters `p`.
--
-- Exactness: integers are exact below 2^53. Times are microseconds (below 2^53 until 2255);
-- GCRA works with `d = tat - now` in scaled units rather than absolute scaled time, so every
-- intermediate value is bounded by the limit's tolerance; the Rust side refuses limits whose
-- arithmetic could reach 2^53. The results equal tollgate-core's to the microsecond.
--
-- Op parameters, per algorithm (p[1], p[2], p[3]):
--   1 gcra            scale, step, burst      state: string "micros", or "micros rem" when rem > 0
--                                            (tat = micros*scale+rem)
--   2 sliding window  window_us, amount       state: string "window prev curr"
--   3 sliding log     window_us, amount       state: string "at:cost,at:cost,..." oldest first
--   4 fixed window    window_us|0(month), amount, utc_offset_secs   state: string "window used"
--   5 concurrency     amount, lease_us        state: sorted set, member lease id, score expiry

local floor = math.floor
local GCRA, SLIDING_WINDOW, SLIDING_LOG, FIXED_WINDOW, CONCURRENCY = 1, 2, 3, 4, 5

-- floor(a / b) and a - b * floor(a / b), exactly, for integers a >= 0 below 2^53 and b >= 1.
local function divmod(a, b)
  local q = floor(a / b)
  local r = a - q * b
  if r < 0 then q = q - 1; r = r + b elseif r >= b then q = q + 1; r = r - b end
  return q, r
end
local function fdiv(a, b) local q = divmod(a, b); return q end
local function cdiv(a, b) local q, r = divmod(a, b); if r > 0 then return q + 1 end return q end
local function sat(a) if a < 0 then return 0 end return a end
-- Integers as decimal text: Lua's own number formatting (%.14g) would round large ones.
local function int(v) return string.format('%d', v) end

-- A verdict: admitted, never_fits, capacity, remaining, reset_after_us, retry_after_us.
local function verdict(admitted, never, capacity, remaining, reset, retry)
  return { admitted and 1 or 0, never and 1 or 0, capacity, remaining, reset, retry }
end

-- Extra TTL when time is overridden (tests): TTLs run on the server's real clock, which does
-- not follow the override, so keys must not expire between two steps of a test.
local ttl_slack_ms = 0

local function set_with_ttl(key, value, ttl_us)
  if ttl_us <= 0 then redis.call('DEL', key); return end
  redis.call('SET', key, value, 'PX', int(cdiv(ttl_us, 1000) + ttl_slack_ms))
end

---------------------------------------------------------------------------------------------
-- GCRA. s = { d = tat - now in scaled units (>= 0) }.
local gcra = {}
function gcra.load(key, p, now)
  local raw = redis.call('GET', key)
  if not raw then return { d = 0 } end
  local q, r = tonumber(raw), 0
  if not q then
    local a, b = string.match(raw, '^(%d+) (%d+)$')
    q, r = tonumber(a), tonumber(b)
  end
  if not q or q < now then return { d = 0 } end
  return { d = (q - now) * p[1] + r }
end
function gcra.eval(s, p, now, cost)
  local scale, step, burst = p[1], p[2], p[3]
  local tau = burst * step
  local cur_rem = fdiv(sat(tau - s.d), step)
  local cur_reset = cdiv(s.d, scale)
  if cost > burst then return verdict(false, true, burst, cur_rem, cur_reset, 0) end
  local nd = s.d + cost * step
  if nd <= tau then
    return verdict(true, false, burst, fdiv(tau - nd, step), cdiv(nd, scale), 0)
  end
  return verdict(false, false, burst, cur_rem, cur_reset, cdiv(nd - tau, scale))
end
function gcra.spend(s, p, now, cost) s.d = s.d + cost * p[2] end
function gcra.charge(s, p, now, at, cost) s.d = s.d + cost * p[2] end
function gcra.refund(s, p, now, at, cost) s.d = sat(s.d - cost * p[2]) end
function gcra.usage(s, p, now)
  local scale, step, burst = p[1], p[2], p[3]
  return { cdiv(s.d, step), burst, fdiv(sat(burst * step - s.d), step), cdiv(s.d, scale) }
end
function gcra.save(key, s, p, now)
  local q, r = divmod(s.d, p[1])
  -- A plain integer when rem is 0 (Redis stores it as an integer; numbers reach Redis as exact
  -- decimal integers below 10^17).
  local v = now + q
  if r > 0 then v = int(v) .. ' ' .. int(r) end
  set_with_ttl(key, v, cdiv(s.d, p[1]))
end

---------------------------------------------------------------------------------------------
-- Sliding window counter. s = { win, prev, curr } rolled forward to now.
local sw = {}
function sw.load(key, p, now)
  local w = p[1]
  local win, prev, curr = 0, 0, 0
  local raw = redis.call('GET', key)
  if raw then
    local a, b, c = string.match(raw, '^(%d+) (%d+) (%d+)$')
    win, prev, curr = tonumber(a), tonumber(b), tonumber(c)
  end
  local idx = fdiv(now, w)
  if idx == win + 1 then prev = curr; curr = 0; win = idx
  elseif idx > win + 1 then prev = 0; curr = 0; win = idx end
  return { win = win, prev = prev, curr = curr }
end
local function sw_reset(s, w, now)
  local n = 0
  if s.curr > 0 then n = 2 elseif s.prev > 0 then n = 1 else return 0 end
  return sat((s.win + n) * w - now)
end
local function sw_weighted(s, w, now)
  local e = sat(now - s.win * w)
  return s.prev * sat(w - e) + s.curr * w
end
function sw.eval(s, p, now, cost)
  local w, amount = p[1], p[2]
  local total = amount * w
  local weighted = sw_weighted(s, w, now)
  local rem_now = fdiv(sat(total - weighted), w)
  if cost > amount then return verdict(false, true, amount, rem_now, sw_reset(s, w, now), 0) end
  if weighted + cost * w <= total then
    local after = { win = s.win, prev = s.prev, curr = s.curr + cost }
    return verdict(true, false, amount, fdiv(total - weighted - cost * w, w), sw_reset(after, w, now), 0)
  end
  local start = s.win * w
  local retry_at
  if s.curr + cost <= amount then
    local room = total - (s.curr + cost) * w
    local e_min = w
    if s.prev > 0 then e_min = sat(w - fdiv(room, s.prev)) end
    retry_at = start + e_min
  else
    local room = (amount - cost) * w
    retry_at = start + w + sat(w - fdiv(room, s.curr))
  end
  return verdict(false, false, amount, rem_now, sw_reset(s, w, now), sat(retry_at - now))
end
function sw.spend(s, p, now, cost) s.curr = s.curr + cost end
local function sw_slot(s, w, at)
  local idx = fdiv(at, w)
  if idx == s.win then return 'curr' elseif idx + 1 == s.win then return 'prev' end
  return nil
end
function sw.charge(s, p, now, at, cost)
  local slot = sw_slot(s, p[1], at)
  if slot then s[slot] = s[slot] + cost end
end
function sw.refund(s, p, now, at, cost)
  local slot = sw_slot(s, p[1], at)
  if slot then s[slot] = sat(s[slot] - cost) end
end
function sw.usage(s, p, now)
  local w, amount = p[1], p[2]
  local weighted = sw_weighted(s, w, now)
  return { cdiv(weighted, w), amount, fdiv(sat(amount * w - weighted), w), sw_reset(s, w, now) }
end
function sw.save(key, s, p, now)
  set_with_ttl(key, int(s.win) .. ' ' .. int(s.prev) .. ' ' .. int(s.curr), sw_reset(s, p[1], now))
end

---------------------------------------------------------------------------------------------
-- Sliding log. s = { at = {...}, cost = {...} } with expired entries pruned.
local log = {}
function log.load(key, p, now)
  local w = p[1]
  local s = { at = {}, cost = {} }
  local raw = redis.call('GET', key)
  if raw then
    for a, c in string.gmatch(raw, '(%d+):(%d+)') do
      a = tonumber(a)
      if a + w > now then
        s.at[#s.at + 1] = a
        s.cost[#s.cost + 1] = tonumber(c)
      end
    end
  end
  return s
end
local function log_sum(s)
  local sum = 0
  for i = 1, #s.cost do sum = sum + s.cost[i] end
  return sum
end
local function log_reset(s, w, now)
  local n = #s.at
  if n == 0 then return 0 end
  return sat(s.at[n] + w - now)
end
function log.eval(s, p, now, cost)
  local w, amount = p[1], p[2]
  local used = log_sum(s)
  local remaining = sat(amount - used)
  if cost > amount then return verdict(false, true, amount, remaining, log_reset(s, w, now), 0) end
  if used + cost <= amount then
    local reset = log_reset(s, w, now)
    if cost > 0 and w > reset then reset = w end
    return verdict(true, false, amount, sat(remaining - cost), reset, 0)
  end
  local need = used + cost - amount
  local freed = 0
  for i = 1, #s.at do
    freed = freed + s.cost[i]
    if freed >= need then
      return verdict(false, false, amount, remaining, log_reset(s, w, now), sat(s.at[i] + w - now))
    end
  end
  return verdict(false, false, amount, remaining, log_reset(s, w, now), 0)
end
function log.spend(s, p, now, cost)
  if cost == 0 then return end
  local n = #s.at
  if n > 0 and s.at[n] >= now then s.cost[n] = s.cost[n] + cost
  else s.at[n + 1] = now; s.cost[n + 1] = cost end
end
local function log_find(s, at)
  local i = 1
  while i <= #s.at and s.at[i] < at do i = i + 1 end
  return i
end
function log.charge(s, p, now, at, cost)
  if at + p[1] <= now or cost == 0 then return end
  local i = log_find(s, at)
  if s.at[i] == at then s.cost[i] = s.cost[i] + cost
  else table.insert(s.at, i, at); table.insert(s.cost, i, cost) end
end
function log.refund(s, p, now, at, cost)
  if at + p[1] <= now then return end
  local i = log_find(s, at)
  if s.at[i] ~= at then
    local n = #s.at
    if n > 0 and s.at[n] > at then i = n else return end
  end
  s.cost[i] = sat(s.cost[i] - cost)
  if s.cost[i] == 0 then table.remove(s.at, i); table.remove(s.cost, i) end
end
function log.usage(s, p, now)
  local used = log_sum(s)
  return { used, p[2], sat(p[2] - used), log_reset(s, p[1], now) }
end
function log.save(key, s, p, now)
  local parts = {}
  for i = 1, #s.at do parts[i] = int(s.at[i]) .. ':' .. int(s.cost[i]) end
  set_with_ttl(key, table.concat(parts, ','), log_reset(s, p[1], now))
end

---------------------------------------------------------------------------------------------
-- Fixed window, calendar-aligned. s = { win, used, ends } rolled forward to now.
local MICROS_PER_DAY = 86400000000

local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- The index of the fixed window containing `t`, and its end.
local function fixed_window(t, w, offset_secs)
  local off = offset_secs * 1000000
  local loc = t + off
  if w > 0 then
    local idx = fdiv(loc, w)
    return sat(idx), sat((idx + 1) * w - off)
  end
  local y, m = civil_from_days(fdiv(loc, MICROS_PER_DAY))
  local idx = y * 12 + m - 1
  if m == 12 then y = y + 1; m = 1 else m = m + 1 end
  return sat(idx), sat(days_from_civil(y, m, 1) * MICROS_PER_DAY - off)
end

local fixed = {}
function fixed.load(key, p, now)
  local win, used = 0, 0
  local raw = redis.call('GET', key)
  if raw then
    local a, b = string.match(raw, '^(%d+) (%d+)$')
    win, used = tonumber(a), tonumber(b)
  end
  local idx, ends = fixed_window(now, p[1], p[3])
  if idx > win then win = idx; used = 0 end
  return { win = win, used = used, ends = ends }
end
function fixed.eval(s, p, now, cost)
  local amount = p[2]
  local until_end = sat(s.ends - now)
  local function reset(u) if u > 0 then return until_end end return 0 end
  if cost > amount then return verdict(false, true, amount, sat(amount - s.used), reset(s.used), 0) end
  local after = s.used + cost
  if after <= amount then
    return verdict(true, false, amount, amount - after, reset(after), 0)
  end
  return verdict(false, false, amount, sat(amount - s.used), reset(s.used), until_end)
end
function fixed.spend(s, p, now, cost) s.used = s.used + cost end
function fixed.charge(s, p, now, at, cost)
  if fixed_window(at, p[1], p[3]) == s.win then s.used = s.used + cost end
end
function fixed.refund(s, p, now, at, cost)
  if fixed_window(at, p[1], p[3]) == s.win then s.used = sat(s.used - cost) end
end
function fixed.usage(s, p, now)
  local reset = 0
  if s.used > 0 then reset = sat(s.ends - now) end
  return { s.used, p[2], sat(p[2] - s.used), reset }
end
function fixed.save(key, s, p, now)
  local ttl = 0
  if s.used > 0 then ttl = sat(s.ends - now) end
  set_with_ttl(key, int(s.win) .. ' ' .. int(s.used), ttl)
end

---------------------------------------------------------------------------------------------
-- Concurrency leases in a sorted set; expired leases are dropped on load.
local conc = {}
function conc.load(key, p, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
  return { key = key, held = redis.call('ZCARD', key) }
end
local function conc_last(s, now)
  local last = redis.call('ZRANGE', s.key, -1, -1, 'WITHSCORES')
  if #last == 0 then return 0 end
  return sat(tonumber(last[2]) - now)
end
function conc.eval(s, p, now, cost)
  local amount, lease = p[1], p[2]
  if s.held < amount then
    local reset = conc_last(s, now)
    if lease > reset then reset = lease end
    return verdict(true, false, amount, amount - s.held - 1, reset, 0)
  end
  local nth = redis.call('ZRANGE', s.key, s.held - amount, s.held - amount, 'WITHSCORES')
  return verdict(false, false, amount, 0, conc_last(s, now), sat(tonumber(nth[2]) - now))
end
function conc.acquire(s, p, now, lease_id)
  redis.call('ZADD', s.key, int(now + p[2]), lease_id)
end
-- Concurrency slots are not spent by cost: charges and refunds do not apply.
function conc.charge(s, p, now, at, cost) end
function conc.refund(s, p, now, at, cost) end
function conc.release(s, lease_id) return redis.call('ZREM', s.key, lease_id) end
function conc.renew(s, p, now, lease_id)
  local exp = redis.call('ZSCORE', s.key, lease_id)
  if not exp or tonumber(exp) <= now then return 0 end
  redis.call('ZADD', s.key, 'XX', int(now + p[2]), lease_id)
  return 1
end
function conc.usage(s, p, now)
  return { s.held, p[1], sat(p[1] - s.held), conc_last(s, now) }
end
function conc.save(key, s, p, now)
  local ttl = conc_last(s, now)
  if ttl <= 0 then redis.call('DEL', key) else redis.call('PEXPIRE', key, int(cdiv(ttl, 1000) + ttl_slack_ms)) end
end

local ALGORITHMS = { gcra, sw, log, fixed, conc }

-- The current time in microseconds: the override if given (tests only), else the server's.
local function now_us(override)
  if override ~= '' then
    ttl_slack_ms = 3600000
    return tonumber(override)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
