-- fast_decide.lua: one decision over n buckets that share a slot, atomically, when every op is
-- GCRA or concurrency. It does only what Redis must do atomically: read each bucket, decide
-- whether all admit, and spend (and, with a request id, remember the reply). The verdicts
-- (remaining, reset, retry_after) are computed by the caller from the state this script
-- returns, with tollgate-core's own functions. A standalone script: no prelude, no helper
-- functions (each would be a closure built on every call), and as few arguments as it can
-- (each costs Redis a string per call). Same state format as algorithms.lua.
--
-- KEYS[1..n]   the buckets, in the decision's order
-- KEYS[n+1]    (modes i, j, I, J only) the idempotency record of the request
-- ARGV[1]      the signature: one letter for the mode, then one per op.
--                mode: "s" spend if every op admits, "p" only evaluate; "i" and "j" the same
--                      with a request id; "S", "P", "I", "J" the same with the time override
--                      (tests) as the last argument
--                op:   "g" GCRA with scale 1, "G" GCRA, "c" concurrency taking a slot,
--                      "k" concurrency only checking for a free slot
-- ARGV[2..]    the ops' parameters, in order:
--                "g": inc, tau            "G": scale, inc, tau
--                     (inc = cost * step, or tau + 1 when the cost exceeds the burst;
--                      tau = burst * step; see algorithms.lua)
--                "c": amount, lease_us    "k": amount
--              then, if any op is "c", the lease id; then, with a request id, how long its
--              record lives in milliseconds; then, with the override, the time in microseconds
--              to use instead of TIME.
--
-- GCRA state: the string "micros" (or "micros rem" when rem > 0), tat = micros * scale + rem in
-- scaled time. Concurrency: a sorted set, member lease id, score expiry in microseconds.
--
-- Returns { now_us, spent (0/1), then per op:
--           GCRA:        d (tat - now in scaled units before this decision, >= 0)
--           concurrency: live leases, the latest expiry (0 if none), and when all slots are
--                        taken the expiry of the (held - amount + 1)-th earliest lease (else 0) }
-- With a request id, the reply of a decision that spends is also kept as the record "F"
-- followed by its numbers joined by commas (settle.lua's rollback deletes it); a request id
-- whose record exists gets it back, as a string (decide.lua's records too), and nothing is
-- spent. A denial is not recorded: it is decided again.

local byte = string.byte
local call = redis.call
local sig = ARGV[1]
local mode = byte(sig, 1)
local n = #KEYS
-- i, j, I, J: with a request id.
local idem = mode == 105 or mode == 106 or mode == 73 or mode == 74
if idem then
  n = n - 1
  local seen = call('GET', KEYS[n + 1])
  if seen then return seen end
end
local now, slack
if mode >= 97 then -- lower case: the server's time
  local t = call('TIME')
  now = t[1] * 1000000 + t[2]
  slack = 0
else
  -- Tests only: TTLs run on the server's real clock, which does not follow the override.
  now = tonumber(ARGV[#ARGV])
  slack = 3600000
end
local reply = { now, 0 }
local m = 2
local all = true
local takes = false
local a = 2
for i = 1, n do
  local k = byte(sig, i + 1)
  local key = KEYS[i]
  if k == 103 or k == 71 then -- g, G
    local scale = 1
    if k == 71 then scale = tonumber(ARGV[a]); a = a + 1 end
    local d = 0
    local raw = call('GET', key)
    if raw then
      local q, r = tonumber(raw), 0
      if not q then
        local x, y = string.match(raw, '^(%d+) (%d+)$')
        q, r = tonumber(x), tonumber(y)
      end
      if q and q >= now then d = (q - now) * scale + r end
    end
    m = m + 1
    reply[m] = d
    if d + ARGV[a] > tonumber(ARGV[a + 1]) then all = false end
    a = a + 2
  else
    -- An empty set costs one command; expired leases are removed before counting.
    local held = call('ZCARD', key)
    local last, nth = 0, 0
    if held > 0 then
      held = held - call('ZREMRANGEBYSCORE', key, '-inf', now)
      if held > 0 then last = tonumber(call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) end
    end
    local amount = tonumber(ARGV[a])
    if held >= amount then
      all = false
      nth = tonumber(call('ZRANGE', key, held - amount, held - amount, 'WITHSCORES')[2])
    end
    reply[m + 1] = held
    reply[m + 2] = last
    reply[m + 3] = nth
    m = m + 3
    if k == 99 then a = a + 2; takes = true else a = a + 1 end
  end
end

-- s, i, S, I: spend.
if all and (mode == 115 or mode == 105 or mode == 83 or mode == 73) then
  local j, b = 2, 2
  for i = 1, n do
    local k = byte(sig, i + 1)
    local key = KEYS[i]
    if k == 103 or k == 71 then
      local scale = 1
      if k == 71 then scale = tonumber(ARGV[b]); b = b + 1 end
      j = j + 1
      local nd = reply[j] + ARGV[b]
      b = b + 2
      -- tat = now * scale + nd, stored as micros = now + q and rem = r (0 <= r < scale).
      local q, r = nd, 0
      if scale ~= 1 then
        q = math.floor(nd / scale)
        r = nd - q * scale
        if r < 0 then q = q - 1; r = r + scale elseif r >= scale then q = q + 1; r = r - scale end
      end
      -- TTL: until the bucket is full again, in whole milliseconds rounded up; a full bucket
      -- is deleted.
      local ttl = q
      if r > 0 then ttl = q + 1 end
      if ttl > 0 then
        local ms = ttl + 999
        ms = (ms - ms % 1000) / 1000 + slack
        -- Numbers reach Redis as exact decimal integers (below 10^17): no string.format.
        if r > 0 then
          call('SET', key, string.format('%d %d', now + q, r), 'PX', ms)
        else
          call('SET', key, now + q, 'PX', ms)
        end
      else
        call('DEL', key)
      end
    else
      if k == 99 then
        local exp = now + ARGV[b + 1]
        call('ZADD', key, exp, ARGV[a])
        -- The key's TTL already reaches the latest expiry; only a later one moves it.
        if exp > reply[j + 2] then
          local ms = exp - now + 999
          call('PEXPIRE', key, (ms - ms % 1000) / 1000 + slack)
        end
        b = b + 2
      else
        b = b + 1
      end
      j = j + 3
    end
  end
  reply[2] = 1
end

if idem and reply[2] == 1 then
  -- The record's lifetime follows the lease id, if there is one.
  local w = a
  if takes then w = a + 1 end
  call('SET', KEYS[n + 1], string.format('F%d' .. string.rep(',%d', m - 1), unpack(reply)), 'PX', ARGV[w])
end
return reply
