-- settle.lua: adjustments to earlier decisions (refund, charge, release, renew) in one slot.
--
-- KEYS[1..n]   the buckets
-- KEYS[n+1]    (only when ARGV[3] is not empty) the idempotency record of a rolled-back decision
-- ARGV[1]      the time in microseconds to use instead of TIME ("" in production)
-- ARGV[2]      n
-- ARGV[3]      "" or the request id whose record KEYS[n+1] is deleted: the decision was rolled
--              back, so a retry is decided afresh
-- ARGV[4+7*(i-1) .. 10+7*(i-1)]   item i: kind (refund, charge, release, renew), algorithm,
--                                  p1, p2, p3, spent_at_us, cost (or the lease id)
--
-- Returns how many releases and renewals found their lease.

local now = now_us(ARGV[1])
local n = tonumber(ARGV[2])
local found = 0
for i = 1, n do
  local b = 4 + 7 * (i - 1)
  local kind = ARGV[b]
  local alg = ALGORITHMS[tonumber(ARGV[b + 1])]
  local p = { tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]) }
  local at = tonumber(ARGV[b + 5])
  local value = ARGV[b + 6]
  -- Releases and renewals only concern concurrency buckets; other buckets are left untouched.
  if (kind ~= 'release' and kind ~= 'renew') or alg.release then
    local s = alg.load(KEYS[i], p, now)
    if kind == 'release' then
      found = found + alg.release(s, value)
    elseif kind == 'renew' then
      found = found + alg.renew(s, p, now, value)
    elseif kind == 'refund' then
      alg.refund(s, p, now, at, tonumber(value))
    else
      alg.charge(s, p, now, at, tonumber(value))
    end
    alg.save(KEYS[i], s, p, now)
  end
end

if ARGV[3] ~= '' then
  redis.call('DEL', KEYS[n + 1])
end
return found
