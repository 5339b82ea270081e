-- decide.lua: one decision over n buckets that share a slot, atomically.
-- Evaluates every op at one instant; if all admit and the mode spends, spends from all of them.
--
-- KEYS[1..n]   the buckets, in the decision's order
-- KEYS[n+1]    (only when ARGV[4] is not empty) the idempotency record of the request
-- ARGV[1]      "spend" or "peek"
-- ARGV[2]      the lease id taken in concurrency buckets whose op cost is 1
-- ARGV[3]      the time in microseconds to use instead of TIME ("" in production)
-- ARGV[4]      the request id for idempotency ("" for none)
-- ARGV[5]      how long the idempotency record lives, in milliseconds
-- ARGV[6]      n
-- ARGV[7+5*(i-1) .. 11+5*(i-1)]   op i: algorithm (1..5), p1, p2, p3, cost
--                                  (see algorithms.lua for p1..p3; concurrency cost 1 takes a slot)
--
-- Returns { now_us, spent (0/1), then per op: admitted, never_fits, capacity, remaining,
--           reset_after_us, retry_after_us }.
-- With a request id, a decision that spends is recorded (the reply, joined by commas), and a
-- request id whose record exists gets that reply again and spends nothing: only admissions are
-- replayed, a denial is decided again. A record that fast_decide.lua wrote is returned as the
-- string it is. A rollback (settle.lua) deletes the record.

local n = tonumber(ARGV[6])
local idem = ARGV[4] ~= ''
if idem then
  local seen = redis.call('GET', KEYS[n + 1])
  if seen then
    -- A record of fast_decide.lua ("F" and its raw reply) goes back as it is: the caller
    -- computes its verdicts.
    if string.byte(seen, 1) == 70 then return seen end
    local reply = {}
    for v in string.gmatch(seen, '[^,]+') do reply[#reply + 1] = tonumber(v) end
    return reply
  end
end

local now = now_us(ARGV[3])
local spend = ARGV[1] == 'spend'
local lease = ARGV[2]
local ops, states = {}, {}
local reply = { now, 0 }
local all = true
for i = 1, n do
  local b = 7 + 5 * (i - 1)
  local alg = ALGORITHMS[tonumber(ARGV[b])]
  local p = { tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]) }
  local cost = tonumber(ARGV[b + 4])
  local s = alg.load(KEYS[i], p, now)
  local v = alg.eval(s, p, now, cost)
  if v[1] == 0 then all = false end
  ops[i] = { alg = alg, p = p, cost = cost }
  states[i] = s
  for j = 1, 6 do reply[#reply + 1] = v[j] end
end

if spend and all then
  for i = 1, n do
    local op, s = ops[i], states[i]
    if op.alg == ALGORITHMS[CONCURRENCY] then
      if op.cost > 0 then op.alg.acquire(s, op.p, now, lease) end
    else
      op.alg.spend(s, op.p, now, op.cost)
    end
    op.alg.save(KEYS[i], s, op.p, now)
  end
  reply[2] = 1
end

if idem and reply[2] == 1 then
  local text = {}
  for i = 1, #reply do text[i] = int(reply[i]) end
  redis.call('SET', KEYS[n + 1], table.concat(text, ','), 'PX', ARGV[5])
end
return reply
