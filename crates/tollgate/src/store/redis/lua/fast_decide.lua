-- fast_decide.lua: one decision over n buckets that share a slot, atomically, when every op is
-- GCRA or concurrency and the decision carries no request id. It does only what Redis must do
-- atomically: read each bucket, decide whether all admit, and spend. The verdicts (remaining,
-- reset, retry_after) are computed by the caller from the state this script returns, with
-- tollgate-core's own functions. A standalone script: it shares no prelude with algorithms.lua,
-- so an EVALSHA runs only this chunk, and it takes as few arguments as it can (each costs Redis
-- a string per call). Same state format as algorithms.lua.
--
-- KEYS[1..n]   the buckets, in the decision's order
-- ARGV[1]      the signature: one letter for the mode, then one per op.
--                mode: "s" spend if every op admits, "p" only evaluate; "S" and "P" the same
--                      with the time override (tests) as the last argument
--                op:   "g" GCRA with scale 1, "G" GCRA, "c" concurrency taking a slot,
--                      "k" concurrency only checking for a free slot
-- ARGV[2..]    the ops' parameters, in order:
--                "g": inc, tau            "G": scale, inc, tau
--                     (inc = cost * step, or tau + 1 when the cost exceeds the burst;
--                      tau = burst * step; see algorithms.lua)
--                "c": amount, lease_us    "k": amount
--              then, if any op is "c", the lease id; then, with "S" or "P", the time in
--              microseconds to use instead of TIME.
--
-- GCRA state: see fast_gcra.lua, which is put in front of this script. Concurrency: a sorted set, member lease id, score expiry in microseconds.
--
-- Returns { now_us, spent (0/1), then per op:
--           GCRA:        d (tat - now in scaled units before this decision, >= 0)
--           concurrency: live leases, the latest expiry (0 if none), and when all slots are
--                        taken the expiry of the (held - amount + 1)-th earliest lease (else 0) }

local byte = string.byte
local sig = ARGV[1]
local mode = byte(sig, 1)
local now, slack
if mode == 115 or mode == 112 then -- s, p
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
  slack = 0
else
  -- Tests only: TTLs run on the server's real clock, which does not follow the override.
  now = tonumber(ARGV[#ARGV])
  slack = 3600000
end
local n = #KEYS
local reply = { now, 0 }
local m = 2
-- Per op: what the spend needs (GCRA: the new d and the scale; concurrency: the latest expiry
-- and the lease length).
local st = {}
local all = true
local a = 2
for i = 1, n do
  local k = byte(sig, i + 1)
  local key = KEYS[i]
  if k == 103 or k == 71 then -- g, G
    local scale = 1
    if k == 71 then scale = tonumber(ARGV[a]); a = a + 1 end
    local d = gcra_load(key, now, scale)
    m = m + 1
    reply[m] = d
    local nd = d + tonumber(ARGV[a])
    if nd > tonumber(ARGV[a + 1]) then all = false end
    a = a + 2
    st[2 * i - 1] = nd
    st[2 * i] = scale
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local held = redis.call('ZCARD', key)
    local last, nth = 0, 0
    if held > 0 then last = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) end
    local amount = tonumber(ARGV[a])
    if held >= amount then
      all = false
      nth = tonumber(redis.call('ZRANGE', key, held - amount, held - amount, 'WITHSCORES')[2])
    end
    reply[m + 1] = held
    reply[m + 2] = last
    reply[m + 3] = nth
    m = m + 3
    st[2 * i - 1] = last
    if k == 99 then -- c
      st[2 * i] = tonumber(ARGV[a + 1])
      a = a + 2
    else
      a = a + 1
    end
  end
end

if all and (mode == 115 or mode == 83) then -- s, S
  for i = 1, n do
    local k = byte(sig, i + 1)
    local key = KEYS[i]
    if k == 103 or k == 71 then
      gcra_store(key, now, st[2 * i - 1], st[2 * i], slack)
    elseif k == 99 then
      local exp = now + st[2 * i]
      redis.call('ZADD', key, exp, ARGV[a])
      local last = st[2 * i - 1]
      if exp > last then last = exp end
      expire_after(key, last - now, slack)
    end
  end
  reply[2] = 1
end
return reply
