-- min_gcra.lua: the smallest useful GCRA decision for one key, as a ceiling for tollgate's
-- decide.lua. Not used by tollgate itself; see docs/bench-redis.md.
--
-- KEYS[1]   the bucket (its value is the theoretical arrival time, TAT, in microseconds)
-- ARGV[1]   the emission interval in microseconds (window / amount)
-- ARGV[2]   the tolerance in microseconds (burst * emission interval)
-- Returns 1 if admitted (and spent), 0 if denied.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = tat + ARGV[1]
if new - now > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000))
return 1
